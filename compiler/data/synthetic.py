"""The embedded synthetic task: seeded +/- word problems, no download needed.

It lives in the compiler so that `distillc validate` can count and measure its
questions (sizes checked before compute); the runtime reads it through runtime.lib.task.
"""

from __future__ import annotations

import random
from functools import lru_cache

from ..spec.schema import SyntheticTask
from .rows import LETTERS, DataError

SPLITS = ("gold", "dev", "distill", "test")
NAMES = ["Tom", "Ann", "Sam", "Lily", "Ben", "Mia", "Leo", "Zoe", "Max", "Eva", "Jack", "Nora"]
OBJECTS = ["apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps", "marbles", "cookies"]
GAIN = ["buys {n} more", "finds {n} more", "gets {n} more", "is given {n} more"]
LOSS = ["gives away {n}", "loses {n}", "sells {n}", "eats {n}"]


def _problem(rng: random.Random, cfg: SyntheticTask) -> tuple[str, str, int]:
    """One word problem: (question, GSM8K-style solution, answer)."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    value = rng.randint(1, cfg.max_number)
    sentences, steps = [f"{name} has {value} {obj}."], []
    for i in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        n = rng.randint(1, cfg.max_number)
        gain = value - n < 0 or rng.random() < 0.5  # never below zero
        verb = rng.choice(GAIN if gain else LOSS).format(n=n)
        sentences.append(f"{'Then ' if i else ''}{name} {verb}.")
        new = value + n if gain else value - n
        steps.append(f"{value} {'+' if gain else '-'} {n} = {new}.")
        value = new
    sentences.append(f"How many {obj} does {name} have now?")
    return " ".join(sentences), " ".join(steps) + f" #### {value}", value


def _options(rng: random.Random, answer: int, k: int) -> tuple[list[str], str]:
    """k distinct numeric options around the answer; returns (options, correct letter)."""
    pool = {answer}
    while len(pool) < k:
        pool.add(max(0, answer + rng.randint(-k - 2, k + 2)))
    options = sorted(pool)
    return [str(o) for o in options], LETTERS[options.index(answer)]


@lru_cache(maxsize=8)
def synthetic(cfg_json: str, fmt: str, seed: int) -> dict[str, tuple]:
    """All synthetic splits at once, so that no question appears in two of them."""
    cfg = SyntheticTask.model_validate_json(cfg_json)
    rng = random.Random(f"distillc-synthetic-{seed}")
    sizes = {"gold": cfg.gold_size, "dev": cfg.dev_size, "distill": cfg.distill_size, "test": cfg.test_size}
    seen: set[str] = set()
    out: dict[str, list] = {s: [] for s in SPLITS}
    attempts = 0
    for split in ("test", "dev", "distill", "gold"):  # scarce questions go to eval first
        while len(out[split]) < sizes[split]:
            attempts += 1
            if attempts > 50 * sum(sizes.values()) + 1000:
                raise DataError(
                    f"the synthetic task has too few distinct questions for {sizes}: "
                    "raise max_number or max_steps, or ask for fewer questions"
                )
            question, solution, answer = _problem(rng, cfg)
            if question in seen:
                continue
            seen.add(question)
            row: dict[str, object] = {"id": f"{split}-{len(out[split]):05d}", "question": question}
            if fmt == "multiple_choice":
                options, letter = _options(rng, answer, cfg.num_options)
                row |= {
                    "options": options,
                    "answer": solution.rsplit("####", 1)[0] + f"#### {letter}",
                    "target": letter,
                }
            else:
                row |= {"answer": solution, "target": str(answer)}
            out[split].append(row)
    return {s: tuple(rows) for s, rows in out.items()}
