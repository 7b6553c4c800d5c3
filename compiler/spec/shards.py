"""Shards: a generate or eval stage run as N Snakemake jobs over fixed, contiguous ranges of whole
sampling batches, then one join job that writes the stage's declared outputs in question order.

Why whole batches: every batch draws from its own seed (generate: per batch and temperature; eval: per
lm-eval batch), so a batch gives the same responses in whichever job samples it, and the joined outputs
are byte-identical for any N. The one home of the facts both sides share: which batches shard k of N
covers, what its job and folder are called, and the `Shard` a shard job's stage config carries.
"""

from __future__ import annotations

from pydantic import Field

from .stagekind import Strict

SHARDS_HELP = (
    "Run this stage as N jobs (on SLURM: N jobs on any nodes, each with the stage's resources) over "
    "fixed, contiguous ranges of whole batches, then join their outputs in question order: the same "
    "bytes as one job. At most the number of batches (questions / batch_size)."
)


def shards_field():
    """The `shards` option of the kinds that sample in fixed batches. Left out of a stage config (and the
    lock) when 1, so a stage that is not sharded keeps the bytes it had before shards existed."""
    return Field(1, ge=1, le=1024, description=SHARDS_HELP, exclude_if=lambda n: n == 1)


class Shard(Strict):
    """Which part of a sharded stage a shard job computes; its stage config carries it (the join's does not)."""

    index: int = Field(..., ge=1, description="1..count")
    count: int = Field(..., ge=2)

    def batches(self, total: int) -> range:
        return batch_range(self.index, self.count, total)

    @property
    def label(self) -> str:
        return f"shard {self.index}/{self.count}"


def batch_range(index: int, count: int, total: int) -> range:
    """The batches shard `index` (1-based) of `count` covers, of `total`: contiguous, in order, sizes
    differing by at most one, together every batch once."""
    return range((index - 1) * total // count, index * total // count)


def batches(questions: int, batch_size: int) -> int:
    """Batches of `batch_size` over `questions` (the last one may be short)."""
    return -(-questions // batch_size)


def shard_name(stage_id: str, index: int, count: int) -> str:
    """A shard's job: its Snakemake rule, stage config, log and benchmark file are named so."""
    return f"{stage_id}_shard{index}of{count}"


def shard_dir(stage_dir: str, index: int, count: int) -> str:
    """A shard's folder, inside its stage's: its outputs, progress and resume files."""
    return f"{stage_dir}/shards/{index}of{count}"


SHARD_INPUT = "shard"  # the join's inputs: input_key(SHARD_INPUT, output, index) = shard_<k>_<output>
