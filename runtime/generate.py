"""generate: sample responses from a model, several temperatures x samples per question.

Output: responses.jsonl, one row per sample, sorted by (question order, sample_id).
Finished question batches are appended to a partial file beside the output, so a
killed run continued later neither loses nor duplicates a row. Every (batch,
temperature) draws from its own derived seed, so a resumed run reproduces exactly
the rows an uninterrupted one would have written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.stages import GenerateStage

from .lib import answers, models
from .lib import task as taskdata
from .lib.checkpoints import resume_dir
from .lib.common import atomic_write_json, derive_seed, log, progress, start, torch_setup, write_jsonl
from .lib.context import check_context_before_weights
from .lib.decoding import answer_stop
from .lib.sampling import prompts, sample
from .lib.startup import settle

PARTIAL = "responses.partial.jsonl"


# ----------------------------------------------------------------------------- sampling
def batch_rows(cfg: StageConfig, stage: GenerateStage, model, tok, batch: list[dict], first: int) -> list[dict]:
    """All samples of one question batch, question-major then sample_id."""
    import torch

    per_q: list[list[dict]] = [[] for _ in batch]
    texts = prompts(batch, cfg.task, tok)
    fmt = cfg.task.format
    answer_format = fmt if answer_stop(fmt, stage.stop_at_answer) else None
    for t in stage.temperatures:
        seed = derive_seed(cfg.seed, cfg.id, first, t)
        torch.manual_seed(seed)
        k = 1 if t == 0 else stage.samples_per_temperature
        outs = sample(model, tok, texts, t, k, stage.max_new_tokens, stage.top_p, answer_format=answer_format)
        for i, out in enumerate(outs):
            rows = per_q[i // k]
            rows.append(
                {
                    "question_id": batch[i // k]["id"],
                    "sample_id": len(rows),
                    "temperature": t,
                    "seed": seed,
                    "text": out.text,
                    "answer": answers.extract(out.text, fmt),
                    "num_tokens": out.num_tokens,
                    "cut_off": out.cut_off,
                }
            )
    return [r for rows in per_q for r in rows]


# ----------------------------------------------------------------------------- resume
def load_partial(path: Path, per_question: int) -> dict[str, list[dict]]:
    """Complete question groups of an earlier run; rewrite the file to hold exactly them.

    The folder holding `path` is a checkpoints.resume_dir: a file of another config is gone.
    A kill can leave a torn last line and a question with only some of its samples:
    both are dropped, and the file is rewritten so that appends start on a clean line.
    """
    if not path.exists():
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
def counts(rows: list[dict]) -> dict[str, int]:
    """How many responses, how many ran to max_new_tokens without a stop, how many hold no answer."""
    return {
        "responses": len(rows),
        "cut_off": sum(r["cut_off"] for r in rows),
        "no_answer": sum(r["answer"] is None for r in rows),
    }


def run(cfg: StageConfig, stage: GenerateStage, model, tok) -> dict:
    """Generate every batch not already in the partial file; return the stats."""
    questions = taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions]
    per_q = sum(1 if t == 0 else stage.samples_per_temperature for t in stage.temperatures)
    partial = resume_dir(cfg, "partial") / PARTIAL
    done = load_partial(partial, per_q)
    if done:
        log(f"resuming: {len(done)}/{len(questions)} questions already generated")
    progress(cfg, len(done), len(questions), "questions")
    tokens, seconds, resumed = 0, 0.0, len(done)
    for first in range(0, len(questions), stage.batch_size):  # fixed boundaries: seeds stay the same
        batch = questions[first : first + stage.batch_size]
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
    shutil.rmtree(partial.parent)  # done: a forced rerun starts fresh
    return {
        "questions": len(questions),
        "samples_per_question": per_q,
        "resumed_questions": resumed,
        **counts(ordered),
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
    }


def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "generate")
    device, dtype = torch_setup(cfg.seed, args.threads, stage.device, stage.precision)
    ref = cfg.models["model"]
    check_context_before_weights(
        cfg,
        ref,
        taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions],
        stage.max_new_tokens,
        "max_new_tokens",
    )
    model, tok = models.load_causal_lm(ref, cfg.task, cfg.spec_seed, dtype, padding_side="left")
    model.to(device).eval()
    settle()
    stats = run(cfg, stage, model, tok)
    atomic_write_json(Path(cfg.out_dir) / "generate_stats.json", stats)
    log(f"wrote {cfg.outputs['responses']}: {stats}")


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
