"""Sampling wall time on 2 cores: one generate job with 2 threads against the same stage in 2 shards of
1 thread each, run side by side (the ratio is what to quote).

    python benchmarks/shards_speed.py [--questions 512] [--repeats 5] [--root DIR]
    python benchmarks/shards_speed.py --print        # only build, and print the two commands to time

The stage is the demo's teacher_samples (temperatures 0.7 and 1.0, 4 samples each, 48 new tokens) on the
demo teacher's architecture with its `init:` weights (no training needed; the same seeds, so every run
generates the same tokens), over the first --questions distill questions in batches of 64. A: `python -m runtime.generate` on the unsharded stage config with --threads 2.
B: both shard jobs at once, --threads 1 each (what `distillc run --cores 2` starts); the join (a second,
reading files) is not sampling and is left out. Each whole process is timed, start-up included, A and B
in turn; the medians and the median of the per-pair ratios B/A are printed, with the load average.
Whether the two arms wrote the same bytes is printed at the end (2 threads against 1 may round apart).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def spec(questions: int, shards: int) -> dict:
    demo = yaml.safe_load((REPO / "specs" / "demo.yaml").read_text())
    stage = {"kind": "generate", "model": "teacher_base", "batch_size": 64, "max_questions": questions}
    stage |= {k: demo["stages"]["teacher_samples"][k] for k in ("temperatures", "samples_per_temperature")}
    stage |= {"max_new_tokens": demo["stages"]["teacher_samples"]["max_new_tokens"], "shards": shards}
    return {
        "name": "speed",
        "seed": 0,
        "task": demo["task"],
        "models": {"teacher_base": demo["models"]["teacher_base"]},
        "stages": {"samples": stage},
    }


def build(root: Path, questions: int, shards: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec(questions, shards), sort_keys=False))
    subprocess.run([str(BIN / "distillc"), "build", "spec.yaml"], cwd=root, check=True, capture_output=True)


def commands(root: Path) -> tuple[list[str], list[str]]:
    """(A, B) as argv lists: B is one shell line that starts both shards and waits for them."""
    stage = f"{sys.executable} -m runtime.generate --config build/speed/stages/{{}}.yaml --threads {{}}"
    one = f"cd {root / 'one'} && exec " + stage.format("samples", 2)
    first, second = (stage.format(f"samples_shard{k}of2", 1) for k in (1, 2))
    two = f"cd {root / 'two'} && {{ {first} & one=$!; {second} & two=$!; wait $one && wait $two; }}"
    return ["sh", "-c", one], ["sh", "-c", two]


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=512, help="distill questions (batches of 64; at least 128)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each arm, after one warm-up each")
    p.add_argument("--root", help="where to build and run (default: a new temporary folder)")
    p.add_argument("--print", action="store_true", help="build, print the two commands, time nothing")
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="distillc-shard-speed-"))
    build(root / "one", args.questions, 1)
    build(root / "two", args.questions, 2)
    a, b = commands(root)
    if args.print:
        print(f"A (1 job, 2 threads):    {a[2]}\nB (2 shards, 1 thread): {b[2]}")
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for warm_up in (a, b):  # file caches
        timed(warm_up, env)
    load = os.getloadavg()
    times: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.repeats):
        times["A"].append(timed(a, env))
        times["B"].append(timed(b, env))
    ratios = [tb / ta for ta, tb in zip(times["A"], times["B"])]
    print(f"load average (1, 5, 15 min) before the timed runs: {load}, after: {os.getloadavg()}")
    for arm, label in (("A", "1 job, 2 threads"), ("B", "2 shards, 1 thread each")):
        ts = times[arm]
        print(f"{arm} ({label}): median {statistics.median(ts):.1f} s (min {min(ts):.1f}, max {max(ts):.1f})")
    print(f"B/A: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    one = (root / "one/runs/speed/samples/responses.jsonl").read_bytes()
    parts = b"".join((root / f"two/runs/speed/samples/shards/{k}of2/responses.jsonl").read_bytes() for k in (1, 2))
    # 2 threads against 1: torch may sum in another order, so the bytes may differ (shards of equal
    # threads write the same bytes: tests/test_shards.py); say which it was
    print("the same responses" if one == parts else "responses differ (2 threads against 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
