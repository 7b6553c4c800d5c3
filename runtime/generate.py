"""generate: sample responses from a model, several temperatures x samples per question.

Output: responses.jsonl, one row per sample, sorted by (question order, sample_id).
Finished question batches are appended to a partial file beside the output, so a
killed run continued later neither loses nor duplicates a row. Every (batch,
temperature) draws from its own derived seed, so a resumed run reproduces exactly
the rows an uninterrupted one would have written.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from . import models
from . import task as taskdata
from .common import atomic_write_json, derive_seed, log, progress, side_dir, start, torch_setup, write_jsonl
from .room import check_before_weights
from .startup import settle

PARTIAL = "responses.partial.jsonl"


# ----------------------------------------------------------------------------- sampling
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


def batch_rows(cfg, stage, model, tok, batch: list[dict], first: int) -> list[dict]:
    """All samples of one question batch, question-major then sample_id."""
    import torch

    per_q: list[list[dict]] = [[] for _ in batch]
    texts = prompts(batch, cfg.task, tok)
    for t in stage.temperatures:
        seed = derive_seed(cfg.seed, cfg.id, first, t)
        torch.manual_seed(seed)
        k = 1 if t == 0 else stage.samples_per_temperature
        outs = sample(model, tok, texts, t, k, stage.max_new_tokens, stage.top_p)
        for i, (text, n) in enumerate(outs):
            rows = per_q[i // k]
            rows.append({"question_id": batch[i // k]["id"], "sample_id": len(rows), "temperature": t,
                         "seed": seed, "text": text, "answer": taskdata.extract_answer(text, cfg.task.format),
                         "num_tokens": n})
    return [r for rows in per_q for r in rows]


# ----------------------------------------------------------------------------- resume
def fingerprint(cfg) -> str:
    """What a partial result depends on: the resolved config and the inputs' files.

    A partial file left by a run with other params, or against an upstream model
    that has since been retrained, is discarded rather than mixed in.
    """
    h = hashlib.sha256(cfg.model_dump_json(exclude={"params": {"resources"}}).encode())
    for path in sorted(cfg.inputs.values()):
        p = Path(path)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def load_partial(path: Path, per_question: int, stamp: str) -> dict[str, list[dict]]:
    """Complete question groups of an earlier run; rewrite the file to hold exactly them.

    A kill can leave a torn last line and a question with only some of its samples:
    both are dropped, and the file is rewritten so that appends start on a clean line.
    """
    stamp_file = path.with_suffix(".fingerprint")
    if not path.exists() or not stamp_file.exists() or stamp_file.read_text() != stamp:
        path.unlink(missing_ok=True)
        stamp_file.write_text(stamp)
        return {}
    groups: dict[str, list[dict]] = {}
    with open(path) as fh:
        for line in fh:
            try:
                row = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                row = None
            if row is None:
                break
            groups.setdefault(row["question_id"], []).append(row)
    done = {q: rows for q, rows in groups.items() if len(rows) == per_question}
    write_jsonl(path, [r for rows in done.values() for r in rows])
    return done


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append and fsync: once this returns, the batch survives a kill."""
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- main
def run(cfg, stage, model, tok) -> dict:
    """Generate every batch not already in the partial file; return the stats."""
    questions = taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions]
    per_q = sum(1 if t == 0 else stage.samples_per_temperature for t in stage.temperatures)
    partial = side_dir(cfg, "partial") / PARTIAL
    done = load_partial(partial, per_q, fingerprint(cfg))
    if done:
        log(f"resuming: {len(done)}/{len(questions)} questions already generated")
    progress(cfg, len(done), len(questions), "questions")
    tokens, seconds, resumed = 0, 0.0, len(done)
    for first in range(0, len(questions), stage.batch_size):   # fixed boundaries: seeds stay the same
        batch = questions[first: first + stage.batch_size]
        if all(q["id"] in done for q in batch):
            continue
        t0 = time.perf_counter()
        rows = [r for r in batch_rows(cfg, stage, model, tok, batch, first) if r["question_id"] not in done]
        dt = time.perf_counter() - t0
        append_rows(partial, rows)
        for r in rows:
            done.setdefault(r["question_id"], []).append(r)
        n = sum(r["num_tokens"] for r in rows)
        tokens, seconds = tokens + n, seconds + dt
        log(f"{len(done)}/{len(questions)} questions, {n / dt:.0f} tokens/s")
        progress(cfg, len(done), len(questions), "questions")
    ordered = [r for q in questions for r in sorted(done[q["id"]], key=lambda r: r["sample_id"])]
    write_jsonl(cfg.outputs["responses"], ordered)
    partial.unlink(missing_ok=True)
    partial.with_suffix(".fingerprint").unlink(missing_ok=True)
    return {"questions": len(questions), "samples_per_question": per_q, "resumed_questions": resumed,
            "generated_tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None}


def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "generate")
    device, dtype = torch_setup(cfg.seed, args.threads, stage.device, stage.precision)
    ref = cfg.models["model"]
    check_before_weights(cfg, ref, taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions],
                         stage.max_new_tokens, "max_new_tokens")
    model, tok = models.load_causal_lm(ref, cfg.task, cfg.spec_seed, dtype, padding_side="left")
    model.to(device).eval()
    settle()
    stats = run(cfg, stage, model, tok)
    atomic_write_json(Path(cfg.out_dir) / "generate_stats.json", stats)
    log(f"wrote {cfg.outputs['responses']}: {stats}")


if __name__ == "__main__":
    from .common import run_stage
    run_stage(main)
