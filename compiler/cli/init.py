"""`distillc init`: a commented starter spec (and example data where it needs some).

demo and paper are the shipped specs; gsm8k and multiple_choice start from the user's own
two jsonl files, and get small example files (made here, deterministically) when those do
not exist yet, so that the new spec validates, builds and runs at once.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..spec.errors import UsageError
from ..spec.files import atomic_write_text

PROJECT = Path(__file__).resolve().parents[2]
STARTERS = {
    "demo": ("the whole method on the built-in synthetic task, no download", PROJECT / "specs" / "demo.yaml"),
    "gsm8k": (
        "your own GSM8K-style jsonl files (answers end with '#### <number>')",
        Path(__file__).parent.parent / "templates" / "init" / "gsm8k.yaml",
    ),
    "multiple_choice": (
        "your own multiple-choice jsonl files (options + answer letter)",
        Path(__file__).parent.parent / "templates" / "init" / "multiple_choice.yaml",
    ),
    "paper": (
        "the paper's setting: 8B teacher, 1B student, GSM8K from the hub, GPUs",
        PROJECT / "specs" / "paper_gsm8k.yaml",
    ),
}
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
THINGS = ["apples", "books", "coins", "pens", "shells", "stamps"]


def _word_problem(rng: random.Random) -> dict:
    """One small step, so that the starter's tiny teacher learns it on a CPU in minutes."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        return {
            "question": f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
            "answer": f"{a} + {b} = {a + b}. #### {a + b}",
        }
    a, b = max(a, b), min(a, b)
    return {
        "question": f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have now?",
        "answer": f"{a} - {b} = {a - b}. #### {a - b}",
    }


def _choice_question(rng: random.Random) -> dict:
    a, b = rng.randint(2, 99), rng.randint(2, 99)  # ~9.6k distinct questions: room for disjoint train and test
    options = sorted({a + b} | {a + b + d for d in rng.sample([-3, -2, -1, 1, 2, 3], 3)})
    return {
        "question": f"What is {a} plus {b}?",
        "options": [str(o) for o in options],
        "answer": "ABCD"[options.index(a + b)],
    }


def example_rows(starter: str, n: int, seed: int, exclude: frozenset = frozenset()) -> list[dict]:
    """n distinct example rows for a starter's format, none of whose questions is in `exclude`."""
    rng, make = random.Random(seed), (_choice_question if starter == "multiple_choice" else _word_problem)
    rows: dict[str, dict] = {}
    while len(rows) < n:
        row = make(rng)
        if row["question"] not in exclude:
            rows.setdefault(row["question"], row)
    return list(rows.values())


def init(starter: str, out: Path, force: bool = False) -> list[str]:
    """Write the starter spec to `out` (and example data beside it); return what was written."""
    if starter not in STARTERS:
        raise UsageError(f"no starter {starter!r}; available: {', '.join(STARTERS)}")
    if out.exists() and not force:
        raise UsageError(f"{out} exists\n    hint: pass another path with --out, or --force to overwrite it")
    atomic_write_text(out, STARTERS[starter][1].read_text())
    written = [str(out)]
    if starter in ("gsm8k", "multiple_choice"):
        data, taken = out.parent / "data", frozenset[str]()
        for name, n, seed in (("train.jsonl", 1500, 0), ("test.jsonl", 200, 1)):
            rows = example_rows(starter, n, seed, taken)  # test questions never repeat a training question
            taken |= {r["question"] for r in rows}
            if not (data / name).exists():
                atomic_write_text(data / name, "".join(json.dumps(r) + "\n" for r in rows))
                written.append(f"{data / name} (example rows: replace with yours)")
    return written
