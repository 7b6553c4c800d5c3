"""How a reward model scores a conversation: the one function the reward_model stage's own scores (held-out
pairs, scores.jsonl), RL and eval's best-of-k reranking (runtime/lib/rerank.py) use, for either head (a
scalar head, or a generative verifier: runtime/lib/verifier.py). A library: the stage programs import it;
it imports no stage program.
"""

from __future__ import annotations

from .verifier import CONFIG_KEY, is_verifier, p_yes
from .verifier import saved as saved_verifier


def scores(model, tok, conversations: list[list[dict]], batch_size: int, max_length: int) -> list[float]:
    """The scalar reward of each full conversation, read at its last real token (the head finds it on either
    padding side). A conversation longer than max_length loses the start of its prompt, never its end: cut on
    the right, every long response would be scored at the same prompt token (tests/test_reward_scoring.py)."""
    import torch

    if is_verifier(model):
        return p_yes(model, tok, conversations, batch_size, max_length)
    model.eval()
    tok.truncation_side = "left"
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(conversations), batch_size):
            texts = [tok.apply_chat_template(c, tokenize=False) for c in conversations[i : i + batch_size]]
            enc = tok(
                texts,
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
                return_tensors="pt",
            ).to(model.device)
            out += model(**enc).logits[:, 0].float().tolist()
    return out


def load(path: str, device=None, dtype=None):
    """(model, tokenizer, max_length) of the reward model a reward_model stage saved at `path`, either head,
    in eval mode (no dropout: its scores are deterministic). max_length: where `scores` cuts a conversation,
    as the stage scored: a verifier records its own; a scalar head records none, so its context (RL's
    scalar rewards cut nothing either)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    kw = {} if dtype is None else {"dtype": dtype}
    tok = AutoTokenizer.from_pretrained(path)
    if saved_verifier(path):
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
        limit = getattr(model.config, CONFIG_KEY)["max_length"]
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kw)
        model.config.pad_token_id = tok.pad_token_id  # the head reads each row at its last real token
        limit = getattr(model.config, "max_position_embeddings", None) or tok.model_max_length
    return (model.to(device) if device is not None else model).eval(), tok, limit


def verifier_reward(path: str, batch_size: int = 32):
    """A TRL reward function (GRPO/RLOO) scoring each completion by the saved verifier at `path`, through
    `scores`: the one scoring function the reward_model stage's own scores use."""
    model, tok, limit = load(path)  # limit: as the reward_model stage scored, the same cut

    def verifier(prompts, completions, **kwargs):  # TRL logs a reward under its function's name
        convs = [
            (p if isinstance(p, list) else [{"role": "user", "content": p}])
            + (c if isinstance(c, list) else [{"role": "assistant", "content": c}])
            for p, c in zip(prompts, completions)
        ]
        return scores(model.to(next(iter(model.parameters())).device), tok, convs, batch_size, limit)

    return verifier
