"""Shards change nothing a run computes: specs/tiny.yaml with `shards: 2` on every generate and eval stage
gives the same responses, samples, metrics and report (above its "Time and memory") as without.

    python benchmarks/shards_tiny.py [--root DIR] [--cores 2]

Two runs of the whole pipeline (`distillc build` + `distillc run`, about 3 minutes each on 2 idle cores).
Both set batch_size 32 on every generate and eval stage, since tiny's stages would otherwise sample
their 128 distill or 64 test questions in one batch, and a shard samples whole batches; the runs differ
in `shards` alone. Every generate stage's responses.jsonl and every eval stage's samples.jsonl and
metrics.json must be byte-identical, and so must report.md and report.html up to "Time and memory",
but for the one line that must differ: the spec hash in "Provenance" (the specs differ by `shards`).
Exit status 0 when all agree, 1 otherwise (the differing files are named).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARDED_KINDS = ("generate", "eval")
HASH = re.compile(r"sha256:[0-9a-f]{64}")  # the spec hash, in the report's Provenance section


def variant(shards: int) -> dict:
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    for stage in spec["stages"].values():
        if stage["kind"] in SHARDED_KINDS:
            stage["batch_size"] = 32
            if shards > 1:
                stage["shards"] = shards
    return spec


def run(root: Path, spec: dict, cores: int) -> float:
    root.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    subprocess.run([str(BIN / "distillc"), "build", "tiny.yaml"], cwd=root, check=True, capture_output=True)
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "distillc"), "run", "--cores", str(cores), "--quiet", "rules"], cwd=root, capture_output=True
    )
    if proc.returncode:
        sys.exit(f"{root}: distillc run failed:\n{proc.stderr.decode()[-3000:]}")
    return time.monotonic() - start


def above_time_and_memory(path: Path) -> str:
    text = path.read_text()
    return HASH.sub("sha256:<spec hash>", text[: text.index("Time and memory")])


def compare(one: Path, two: Path, spec: dict) -> list[str]:
    """The files that differ (relative to runs/tiny/)."""
    files = [
        f"{sid}/{name}"
        for sid, stage in spec["stages"].items()
        if stage["kind"] in SHARDED_KINDS
        for name in (("responses.jsonl",) if stage["kind"] == "generate" else ("samples.jsonl", "metrics.json"))
    ]
    differ = [f for f in files if (one / f).read_bytes() != (two / f).read_bytes()]
    for report in ("report/report.md", "report/report.html"):
        if above_time_and_memory(one / report) != above_time_and_memory(two / report):
            differ.append(report + " (above Time and memory)")
    print(f"compared {len(files)} stage outputs and 2 reports")
    return differ


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="where to run (default: a new temporary folder, kept)")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="distillc-shards-"))
    runs = {}
    for shards in (1, 2):
        spec = variant(shards)
        seconds = run(root / f"shards{shards}", spec, args.cores)
        runs[shards] = root / f"shards{shards}" / "runs" / "tiny"
        print(f"shards {shards}: {seconds:.0f} s ({root / f'shards{shards}'})", flush=True)
    differ = compare(runs[1], runs[2], variant(2))
    print("the same bytes" if not differ else "DIFFER: " + ", ".join(differ))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
