"""Sampling: batched generation from a causal LM, for generate and sft's dev check.

One home for the prompt text and the generate() call, so that the samples a stage
writes and the dev accuracy a teacher stops on come from the same decoding. (eval
does not use it: lm-eval generates itself, so its numbers compare with others'.)
Heavy imports stay inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

from . import answers
from . import task as taskdata


def prompts(rows: list[dict], task, tokenizer) -> list[str]:
    """Chat prompts as text; the template already holds BOS, so tokenize without special tokens."""
    return [tokenizer.apply_chat_template(taskdata.messages(r, task), add_generation_prompt=True, tokenize=False)
            for r in rows]


def sample(model, tokenizer, texts: list[str], temperature: float, k: int, max_new_tokens: int,
           top_p: float = 1.0, cache: str = "auto") -> list[tuple[str, int]]:
    """(decoded text, generated tokens up to and including EOS) for k samples per prompt.

    Rows come back prompt-major: prompt i's samples are rows i*k .. i*k+k-1.
    Temperature 0 is greedy decoding, one sample per prompt. The caller seeds torch.
    `cache`: "auto" (static on CPU, dynamic on GPU, as below), or "static" / "dynamic"
    (benchmarks/generation.py compares the two on the same settings).
    """
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kw: dict[str, object]
    if temperature == 0:
        kw = dict(do_sample=False, num_return_sequences=1)
    else:   # top_k=0: only temperature and top_p shape the distribution, whatever the model's defaults
        kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=k)
    if cache == "static" or (cache == "auto" and model.device.type == "cpu"):
        # a preallocated KV cache skips a torch.cat per layer and step: ~1.3x tokens/s on CPU.
        # Not on GPU, where a static cache makes transformers compile the model for every new shape.
        kw["cache_implementation"] = "static"
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, use_cache=True, **kw)
    gen = out[:, enc["input_ids"].shape[1]:]
    is_eos = gen == tokenizer.eos_token_id
    # a row that never emitted EOS used every generated position
    lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, gen.shape[1]).tolist()
    texts_out = tokenizer.batch_decode(gen, skip_special_tokens=True)
    return [(t.strip(), n) for t, n in zip(texts_out, lengths)]


def greedy_accuracy(model, tok, task, rows: list[dict], max_new_tokens: int, batch: int) -> float:
    """Share of gold rows whose greedy answer is their target (left-padded batches, `batch` per call)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(rows), batch):
        part = rows[i: i + batch]
        outs = sample(model, tok, prompts(part, task, tok), 0.0, 1, max_new_tokens)
        correct += sum(answers.same(answers.extract(text, task.format), r["target"])
                       for r, (text, _) in zip(part, outs))
    model.train(was_training)
    return correct / len(rows)
