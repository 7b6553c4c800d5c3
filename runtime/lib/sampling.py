"""Sampling: batched generation from a causal LM, for generate and sft's dev check.

One home for the prompt text and the generate() call, so that the samples a stage
writes and the dev accuracy a teacher stops on come from the same decoding. Where a
response stops is runtime/lib/decoding.py's rule, which eval's lm-eval model applies too
(lm-eval generates itself, so its numbers compare with others').
Heavy imports stay inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from . import answers, decoding
from . import task as taskdata


def prompts(rows: list[dict], task, tokenizer) -> list[str]:
    """Chat prompts as text; the template already holds BOS, so tokenize without special tokens."""
    return [
        tokenizer.apply_chat_template(taskdata.messages(r, task), add_generation_prompt=True, tokenize=False)
        for r in rows
    ]


class Response(NamedTuple):
    text: str  # decoded, cut after the first complete answer when the rule stops there, stripped
    num_tokens: int  # generated tokens up to and including the stop
    cut_off: bool  # reached max_new_tokens without any stop


def sample(
    model,
    tokenizer,
    texts: list[str],
    temperature: float,
    k: int,
    max_new_tokens: int,
    top_p: float = 1.0,
    cache: str = "auto",
    answer_format: str | None = None,
) -> list[Response]:
    """k samples per prompt, decoded under the project's one rule (runtime/lib/decoding.py).

    Rows come back prompt-major: prompt i's samples are rows i*k .. i*k+k-1.
    Temperature 0 is greedy decoding, one sample per prompt. The caller seeds torch.
    `answer_format`: stop each row at its first complete final answer of this task format
    (decoding.answer_stop decides whether the stage's option and the format allow it); None: no answer stop.
    `cache`: "auto" (static on CPU, dynamic on GPU, as below), or "static" / "dynamic"
    (benchmarks/generation.py compares the two on the same settings).
    """
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kw: dict[str, object]
    if temperature == 0:
        kw = dict(do_sample=False, num_return_sequences=1)
    else:  # top_k=0: only temperature and top_p shape the distribution, whatever the model's defaults
        kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=k)
    if cache == "static" or (cache == "auto" and model.device.type == "cpu"):
        # a preallocated KV cache skips a torch.cat per layer and step: ~1.3x tokens/s on CPU.
        # Not on GPU, where a static cache makes transformers compile the model for every new shape.
        kw["cache_implementation"] = "static"
    prompt_length = enc["input_ids"].shape[1]
    stop_ids = decoding.stop_token_ids(model, tokenizer)
    answer = decoding.answer_stop_criterion(tokenizer, prompt_length, answer_format) if answer_format else None
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_ids,
            use_cache=True,
            stopping_criteria=[answer] if answer is not None else None,
            **kw,
        )
    gen = out[:, prompt_length:]
    rows = decoding.row_lengths(gen, stop_ids, answer.at if answer is not None else None)
    return [
        Response(
            decoding.trim(
                tokenizer.decode(gen[i, :n], skip_special_tokens=True), answer_format or "", answer_format is not None
            ),
            n,
            cut,
        )
        for i, (n, cut) in enumerate(rows)
    ]


def greedy_accuracy(model, tok, task, rows: list[dict], max_new_tokens: int, batch: int) -> float:
    """Share of gold rows whose greedy answer is their target (left-padded batches, `batch` per call)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        outs = sample(
            model,
            tok,
            prompts(part, task, tok),
            0.0,
            1,
            max_new_tokens,
            answer_format=task.format if decoding.answer_stop(task.format, True) else None,
        )
        correct += sum(answers.same(answers.extract(o.text, task.format), r["target"]) for r, o in zip(part, outs))
    model.train(was_training)
    return correct / len(rows)
