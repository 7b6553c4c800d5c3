"""A generative verifier (Zhang et al., Generative Verifiers, arXiv 2408.15240) as a reward model.

The LM itself is trained by next-token prediction to answer one question after a
response, "Is the answer correct? Yes or No.", with "Yes" when the response's answer
agrees with the pseudo-label and "No" when it does not. Its reward is p(Yes)
normalised over the two verdicts, sigmoid(logit(Yes) - logit(No)): a probability,
read from the LM head that already models arithmetic, where a fresh scalar head on
the last hidden state (head: scalar) has to learn it from the pairs.

The verdict token ids and the question live in the saved model's config.json
(`distillc_verifier`, with the stage's max_length), so whoever loads the folder (the RL stage, the report's
scores) knows it is a verifier and how to ask it.
"""

from __future__ import annotations

from .common import StageError

QUESTION = "Is the answer correct? Yes or No."
VERDICTS = ("Yes", "No")
CONFIG_KEY = "distillc_verifier"


def ask(conversation: list[dict]) -> list[dict]:
    return conversation + [{"role": "user", "content": QUESTION}]


def _split(tok, conversation: list[dict]) -> tuple[list[int], int | None, int | None]:
    """(prefix ids, id of Yes, id of No): the conversation, the question and the assistant's turn written
    with each verdict; the prefix is what the two share, the verdict the first token where they differ."""
    full = []
    for word in VERDICTS:
        text = tok.apply_chat_template(ask(conversation) + [{"role": "assistant", "content": word}], tokenize=False)
        full.append(tok(text, add_special_tokens=False)["input_ids"])
    yes, no = full
    n = next((i for i, (a, b) in enumerate(zip(yes, no)) if a != b), min(len(yes), len(no)))
    return yes[:n], (yes[n] if n < len(yes) else None), (no[n] if n < len(no) else None)


def prefix_ids(tok, conversation: list[dict]) -> list[int]:
    """Token ids up to the place the verdict goes."""
    return _split(tok, conversation)[0]


def verdict_ids(tok) -> tuple[int, int] | None:
    """The ids of "Yes" and "No" where the verdict goes; None unless they are two distinct known tokens."""
    _, yes, no = _split(tok, [{"role": "user", "content": "1 + 1"}, {"role": "assistant", "content": "2"}])
    return None if yes is None or no is None or tok.unk_token_id in (yes, no) else (yes, no)


def prepare(model, tok, max_length: int) -> None:
    """Make the verdicts two tokens of the vocabulary (a word-level demo vocabulary has neither: they are
    added and the embeddings grown) and record them in the model's config."""
    ids = verdict_ids(tok)
    if ids is None:
        tok.add_tokens(list(VERDICTS))
        model.resize_token_embeddings(len(tok))
        ids = verdict_ids(tok)
    if ids is None:
        raise StageError(
            "head: verifier: this tokenizer's chat template does not put 'Yes' and 'No' as one "
            "distinct token each right after the verifier's question; use head: scalar"
        )
    setattr(model.config, CONFIG_KEY, {"question": QUESTION, "yes": ids[0], "no": ids[1], "max_length": max_length})


def is_verifier(model) -> bool:
    return getattr(model.config, CONFIG_KEY, None) is not None


def training_rows(labels: list[dict], prompts: dict, tok, max_length: int) -> list[dict]:
    """One row per labelled response: the prefix (its start cut when too long) then the verdict token,
    the loss on the verdict alone."""
    yes, no = known_verdict_ids(tok)
    rows = []
    for r in labels:
        head = prefix_ids(tok, prompts[r["question_id"]] + [{"role": "assistant", "content": r["text"]}])
        head = head[-(max_length - 1) :]
        verdict = yes if r["label"] == 1 else no
        rows.append({"input_ids": head + [verdict], "labels": [-100] * len(head) + [verdict]})
    return rows


def known_verdict_ids(tok) -> tuple[int, int]:
    ids = verdict_ids(tok)
    if ids is None:
        raise StageError("the verifier's tokenizer has no verdict tokens; call verifier.prepare first")
    return ids


def trainer(model, tok, rows: list[dict], args: dict):
    """A plain causal-LM Trainer: the model's own next-token loss, masked to the verdict."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    return Trainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        args=TrainingArguments(**args),
    )


def p_yes(model, tok, conversations: list[list[dict]], batch_size: int, max_length: int) -> list[float]:
    """The reward of each conversation: p(Yes) over {Yes, No} at the verdict's place (left padding, so
    the place is the last column)."""
    import torch

    cfg = getattr(model.config, CONFIG_KEY)
    model.eval()
    pad = tok.pad_token_id
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(conversations), batch_size):
            heads = [prefix_ids(tok, c)[-max_length:] for c in conversations[i : i + batch_size]]
            width = max(map(len, heads))
            ids = torch.tensor([[pad] * (width - len(h)) + h for h in heads], device=model.device)
            mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads], device=model.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as in training: the first real token at 0
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
            out += torch.sigmoid(logits[:, cfg["yes"]] - logits[:, cfg["no"]]).tolist()
    return out


def saved(path) -> bool:
    """Is the model folder at `path` a verifier (its config.json says so)?"""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    return config.exists() and CONFIG_KEY in json.loads(config.read_text())
