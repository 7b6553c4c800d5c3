"""generate: sample responses from a model, several temperatures x samples per question.

Output: responses.jsonl, one row per sample, sorted by (question order, sample_id).
Finished question batches are appended to a partial file beside the output, so a
killed run continued later neither loses nor duplicates a row. Every (batch,
temperature) draws from its own derived seed, so a resumed run reproduces exactly
the rows an uninterrupted one would have written, and a sharded stage's shard jobs
(compiler/spec/shards.py), each sampling a contiguous range of the same batches with the
stage's own id and absolute batch offsets, join to the very bytes one job writes.
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
from .lib.common import atomic_write_json, derive_seed, log, progress, read_json, start, torch_setup, write_jsonl
from .lib.context import check_context_before_weights
from .lib.decoding import answer_stop
from .lib.errors import StageError
from .lib.sampling import prompts, sample
from .lib.shards import batches_here, join_benchmarks
from .lib.startup import settle

PARTIAL = "responses.partial.jsonl"
STATS = "generate_stats.json"  # beside responses.jsonl (the report's cut-off section reads it)


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
    """Generate every batch of this job (the stage's, or its shard's) not already in the partial file;
    return the stats."""
    questions = taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions]
    here = batches_here(cfg, len(questions), stage.batch_size)
    mine = questions[here.start * stage.batch_size : here.stop * stage.batch_size]
    per_q = samples_per_question(stage)
    partial = resume_dir(cfg, "partial") / PARTIAL
    done = load_partial(partial, per_q)
    if done:
        log(f"resuming: {len(done)}/{len(mine)} questions already generated")
    progress(cfg, len(done), len(mine), "questions")
    tokens, seconds, resumed = 0, 0.0, len(done)
    for first in range(here.start * stage.batch_size, here.stop * stage.batch_size, stage.batch_size):
        batch = questions[first : first + stage.batch_size]  # fixed boundaries: seeds stay the same
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
        log(f"{len(done)}/{len(mine)} questions, {n / dt:.0f} tokens/s")
        progress(cfg, len(done), len(mine), "questions")
    ordered = [r for q in mine for r in sorted(done[q["id"]], key=lambda r: r["sample_id"])]
    write_jsonl(cfg.outputs["responses"], ordered)
    shutil.rmtree(partial.parent)  # done: a forced rerun starts fresh
    return {
        "questions": len(mine),
        "samples_per_question": per_q,
        "resumed_questions": resumed,
        **counts(ordered),
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
    }


def samples_per_question(stage: GenerateStage) -> int:
    return sum(1 if t == 0 else stage.samples_per_temperature for t in stage.temperatures)


# ----------------------------------------------------------------------------- join (a sharded stage)
def join(cfg: StageConfig, stage: GenerateStage) -> dict:
    """A sharded stage's responses.jsonl: its shards' files one after the other, byte for byte (shard k
    holds the k-th contiguous range of question batches), checked to hold every question once, in order.
    Its generate_stats.json adds up theirs; its benchmark file sums their times (runtime/lib/shards.py)."""
    questions = taskdata.questions(cfg.task, stage.split, cfg.spec_seed)[: stage.max_questions]
    per_q = samples_per_question(stage)
    found = concatenate(cfg.shard_inputs("responses"), cfg.outputs["responses"], [q["id"] for q in questions], per_q)
    parts = [read_json(Path(p).parent / STATS) for p in cfg.shard_inputs("responses")]
    tokens, seconds = sum(p["generated_tokens"] for p in parts), sum(p["seconds"] for p in parts)
    join_benchmarks(cfg)
    return {
        "questions": len(questions),
        "samples_per_question": per_q,
        "resumed_questions": sum(p["resumed_questions"] for p in parts),
        **found,
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "shards": len(parts),
    }


def concatenate(paths: list[str], out: str, ids: list[str], per_q: int) -> dict[str, int]:
    """Write the files at `paths` one after the other to `out` (atomically, line by line: no file is held in
    memory), checking that they hold `per_q` rows of each question of `ids`, in order; return counts."""
    expected = iter([q for q in ids for _ in range(per_q)])
    found = {"responses": 0, "cut_off": 0, "no_answer": 0}
    tmp = Path(out).with_name(f".{Path(out).name}.joining")
    try:
        with open(tmp, "w") as fh:
            for path in paths:
                with open(path) as src:
                    for line in src:
                        row = json.loads(line)
                        if row["question_id"] != next(expected, None):
                            raise StageError(
                                f"{path}: question {row['question_id']!r} is out of place: the shards' files do "
                                "not hold the stage's questions in order (left by another build?); delete them "
                                "and rerun"
                            )
                        found["responses"] += 1
                        found["cut_off"] += bool(row["cut_off"])
                        found["no_answer"] += row["answer"] is None
                        fh.write(line)
        if next(expected, None) is not None:
            raise StageError(f"the shards hold {found['responses']} responses of {len(ids) * per_q}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return found


def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "generate")
    if cfg.joins:  # a sharded stage's join: no model, no torch
        stats = join(cfg, stage)
        atomic_write_json(Path(cfg.out_dir) / STATS, stats)
        progress(cfg, stats["questions"], stats["questions"], "questions")
        log(f"joined {stats['shards']} shards into {cfg.outputs['responses']}: {stats}")
        return
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
    atomic_write_json(Path(cfg.out_dir) / STATS, stats)
    log(f"wrote {cfg.outputs['responses']}: {stats}")


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
