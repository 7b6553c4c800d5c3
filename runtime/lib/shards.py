"""What a sharded stage's jobs share at run time (compiler/spec/shards.py says what shards are): which
batches a job samples, and the join's benchmark file. The kinds' own joins are in their programs."""

from __future__ import annotations

import csv
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.files import atomic_write_text
from compiler.spec.shards import batches
from compiler.spec.stagekind import BENCHMARK

from .errors import StageError


def batches_here(cfg: StageConfig, units: int, batch_size: int) -> range:
    """The batches (0-based, of batch_size `units` each) this job samples: all of the stage's, or its shard's.

    The compiler refuses more shards than batches where it can count the questions; a hub split is
    counted only here, so a shard that would get no batch fails with the same advice.
    """
    total = batches(units, batch_size)
    if cfg.shard is None:
        return range(total)
    if cfg.shard.count > total:
        raise StageError(
            f"shards: {cfg.shard.count}, but the stage has only {total} batches ({units} / batch_size "
            f"{batch_size}): each shard samples whole batches; lower shards to {total}, or batch_size"
        )
    return cfg.shard.batches(total)


# Snakemake's benchmark columns: summed over the shards (time, I/O) or their largest (memory).
SUMMED = ("s", "io_in", "io_out", "cpu_time")
LARGEST = ("max_rss", "max_vms", "max_uss", "max_pss")


def join_benchmarks(cfg: StageConfig) -> None:
    """The stage's benchmark file from its shards': the report's "Time and memory" row of a sharded stage
    is its shards' summed time (what the stage cost, not how long one waited) and their largest memory."""
    rows = []
    for path in cfg.shard_inputs(BENCHMARK):
        found = list(csv.DictReader(Path(path).read_text().splitlines(), delimiter="\t"))
        if not found:
            raise StageError(f"{path}: an empty benchmark file")
        rows.append(found[0])
    header = list(rows[0])
    joined = {key: _combine(key, [r.get(key, "NA") for r in rows]) for key in header}
    if "h:m:s" in joined and joined.get("s", "NA") != "NA":
        seconds = round(float(joined["s"]))
        joined["h:m:s"] = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    atomic_write_text(cfg.outputs[BENCHMARK], "\t".join(header) + "\n" + "\t".join(joined.values()) + "\n")


def _combine(key: str, values: list[str]) -> str:
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "NA"
    if key in SUMMED:
        return f"{sum(numbers):.4f}"
    if key in LARGEST:
        return f"{max(numbers):.2f}"
    return f"{sum(numbers) / len(numbers):.2f}"  # mean_load: the shards' mean
