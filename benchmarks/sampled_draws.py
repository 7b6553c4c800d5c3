"""How far one sampled eval's numbers move between draws, and whether its samples are independent draws.

    python benchmarks/sampled_draws.py [--draws 8] [--root DIR] [--cores 2]

specs/demo.yaml's teacher with its `eval_teacher_sampled` stage (8 samples at T=1.0 per question) under
`--draws` stage names (`eval_teacher_sampled`, `eval_teacher_sampled_2`, ...): every sampled eval draws from
seeds of its own stage id and lm-eval batch, so each name is one more draw of the same eval of the same model.
About 4 minutes on 2 idle cores for 8 draws. Prints, per draw, the single-sample and majority-of-8 accuracy, and
over all draws:
- within-draw vs across-draw agreement: how often two of a question's samples give the same answer, for two
  samples of one draw and for two of different draws. Independent draws give the same rate; repeats that
  shared random numbers would agree more within a draw.
- the spread of one sample position's accuracy (the 1st of 8, the 2nd, ...) against what independent draws
  with each question's pooled rate give.
- the majority-of-8 accuracy that independent draws from each question's pooled answers give (simulated,
  2,000 times): its mean, its 95% range, and where each draw's majority falls in it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from runtime.lib.answers import same, vote

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE = "eval_teacher_sampled"


def names(draws: int) -> list[str]:
    return [STAGE] + [f"{STAGE}_{k}" for k in range(2, draws + 1)]


def spec(draws: int) -> dict:
    """The demo's teacher and its sampled eval under `draws` names (nothing else)."""
    demo = yaml.safe_load((REPO / "specs" / "demo.yaml").read_text())
    stages = demo["stages"]
    demo["name"] = "sampled_draws"
    demo["stages"] = {"teacher": stages["teacher"]} | {n: dict(stages[STAGE]) for n in names(draws)}
    return demo


def run(root: Path, draws: int, cores: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "draws.yaml").write_text(yaml.safe_dump(spec(draws), sort_keys=False))
    subprocess.run([str(BIN / "distillc"), "build", "draws.yaml"], cwd=root, check=True, capture_output=True)
    proc = subprocess.run([str(BIN / "distillc"), "run", "--cores", str(cores)], cwd=root, capture_output=True)
    if proc.returncode:
        sys.exit(f"{root}: distillc run failed:\n{proc.stderr.decode()[-3000:]}")
    return root / "runs" / "sampled_draws"


def majority(answers: list) -> str | None:
    return vote(answers)[0]  # the project's one vote, the one the eval's majority filter applies


def analyse(draws: list[list[dict]]) -> None:
    questions = [r["question_id"] for r in draws[0]]
    target = {r["question_id"]: r["target"] for r in draws[0]}
    by_q = [{r["question_id"]: r["answers"] for r in rows} for rows in draws]
    n = len(questions)
    for k, rows in enumerate(draws):
        single = sum(same(r["answers"][0], r["target"]) for r in rows) / n
        print(f"draw {k + 1}: single {100 * single:.1f}, majority of 8 {100 * majority_accuracy(by_q[k], target):.1f}")
    within = [a[i] == a[j] for d in by_q for a in d.values() for i, j in itertools.combinations(range(len(a)), 2)]
    across = [x == y for d1, d2 in itertools.combinations(by_q, 2) for q in questions for x in d1[q] for y in d2[q]]
    print(
        f"answer agreement of two samples: within a draw {statistics.fmean(within):.4f}, across draws {statistics.fmean(across):.4f}"
    )
    pooled = {q: [a for d in by_q for a in d[q]] for q in questions}
    rate = {q: statistics.fmean([same(a, target[q]) for a in pooled[q]]) for q in questions}
    expected = math.sqrt(sum(p * (1 - p) for p in rate.values())) / n
    positions = [
        statistics.fmean([same(d[q][i], target[q]) for q in questions])
        for d in by_q
        for i in range(len(d[questions[0]]))
    ]
    print(
        f"one sample position's accuracy: mean {100 * statistics.fmean(positions):.1f}, sd {100 * statistics.stdev(positions):.2f} "
        f"points over {len(positions)} positions (independent draws: {100 * expected:.2f})"
    )
    rng = random.Random(0)
    sims = sorted(
        majority_accuracy({q: rng.choices(pooled[q], k=len(by_q[0][q])) for q in questions}, target)
        for _ in range(2000)
    )
    print(
        f"majority of 8 from independent draws of the pooled answers: mean {100 * statistics.fmean(sims):.1f}, "
        f"95% range [{100 * sims[50]:.1f}, {100 * sims[1949]:.1f}]"
    )
    for k, d in enumerate(by_q):
        acc = majority_accuracy(d, target)
        print(f"  draw {k + 1}: {100 * acc:.1f} at quantile {statistics.fmean([s <= acc for s in sims]):.3f}")


def majority_accuracy(answers: dict, target: dict) -> float:
    return statistics.fmean([same(majority(a), target[q]) for q, a in answers.items()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--root", help="where to run (default: a new temporary folder, kept)")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="distillc-draws-"))
    runs = run(root, args.draws, args.cores)
    draws = [[json.loads(line) for line in (runs / n / "samples.jsonl").open()] for n in names(args.draws)]
    analyse(draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
