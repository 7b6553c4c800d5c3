"""Task data: the embedded synthetic task and users' jsonl/hub data, as uniform rows.

Two doors, on purpose:
- `questions(task, split)` returns rows WITHOUT answers: all distillation stages use it.
- `gold(task, split)` returns the answers: only the teacher bootstrap (gold/dev),
  eval and the after-the-fact report may call it.
Pure Python (no torch), so light stages import it cheaply.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from functools import lru_cache
from pathlib import Path

from compiler.schema import DataSource, SyntheticTask, TaskSpec

SPLITS = ("gold", "dev", "distill", "test")
LETTERS = "ABCDEFGHIJ"
NAMES = ["Tom", "Ann", "Sam", "Lily", "Ben", "Mia", "Leo", "Zoe", "Max", "Eva", "Jack", "Nora"]
OBJECTS = ["apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps", "marbles", "cookies"]
GAIN = ["buys {n} more", "finds {n} more", "gets {n} more", "is given {n} more"]
LOSS = ["gives away {n}", "loses {n}", "sells {n}", "eats {n}"]


class DataError(Exception):
    """A malformed data row, named by file and line."""


# ----------------------------------------------------------------------------- synthetic
def _problem(rng: random.Random, cfg: SyntheticTask) -> tuple[str, str, int]:
    """One word problem: (question, GSM8K-style solution, answer)."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    value = rng.randint(1, cfg.max_number)
    sentences, steps = [f"{name} has {value} {obj}."], []
    for i in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        n = rng.randint(1, cfg.max_number)
        gain = value - n < 0 or rng.random() < 0.5      # never below zero
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
def _synthetic(cfg_json: str, fmt: str, seed: int) -> dict[str, tuple]:
    """All synthetic splits at once, so that no question appears in two of them."""
    cfg = SyntheticTask.model_validate_json(cfg_json)
    rng = random.Random(f"distillc-synthetic-{seed}")
    sizes = {"gold": cfg.gold_size, "dev": cfg.dev_size, "distill": cfg.distill_size, "test": cfg.test_size}
    seen: set[str] = set()
    out: dict[str, list] = {s: [] for s in SPLITS}
    attempts = 0
    for split in ("test", "dev", "distill", "gold"):   # scarce questions go to eval first
        while len(out[split]) < sizes[split]:
            attempts += 1
            if attempts > 50 * sum(sizes.values()) + 1000:
                raise DataError(f"the synthetic task has too few distinct questions for {sizes}: "
                                "raise max_number or max_steps, or ask for fewer questions")
            question, solution, answer = _problem(rng, cfg)
            if question in seen:
                continue
            seen.add(question)
            row = {"id": f"{split}-{len(out[split]):05d}", "question": question}
            if fmt == "multiple_choice":
                options, letter = _options(rng, answer, cfg.num_options)
                row |= {"options": options, "answer": solution.rsplit("####", 1)[0] + f"#### {letter}",
                        "target": letter}
            else:
                row |= {"answer": solution, "target": str(answer)}
            out[split].append(row)
    return {s: tuple(rows) for s, rows in out.items()}


# ----------------------------------------------------------------------------- files and hub
def _target(answer: str, fmt: str) -> str:
    if fmt == "multiple_choice":
        return answer.strip().split("####")[-1].strip().strip("()").upper()[:1]
    final = answer.split("####")[-1].strip().replace(",", "")
    return final


def _normalise(raw: dict, fmt: str, where: str, index: int, split: str) -> dict:
    if not isinstance(raw, dict) or not isinstance(raw.get("question"), str):
        raise DataError(f"{where}: a row needs a string `question`")
    answer = raw.get("answer")
    if split != "distill" and not isinstance(answer, str):
        raise DataError(f"{where}: a {split} row needs a string `answer`")
    row = {"id": str(raw.get("id", f"{split}-{index:05d}")), "question": raw["question"]}
    if fmt == "multiple_choice":
        options = raw.get("options")
        if not isinstance(options, list) or not 2 <= len(options) <= 10:
            raise DataError(f"{where}: a multiple_choice row needs `options`: a list of 2-10 strings")
        row["options"] = [str(o) for o in options]
    if isinstance(answer, str):
        target = _target(answer, fmt)
        ok = re.fullmatch(r"[A-J]", target) if fmt == "multiple_choice" else re.fullmatch(r"-?\d+(\.\d+)?", target)
        if not ok and split != "distill":
            raise DataError(f"{where}: cannot read the final answer from {answer[-40:]!r}; "
                            + ("end it with a letter A-J" if fmt == "multiple_choice" else "end it with '#### <number>'"))
        row |= {"answer": answer, "target": target}
    return row


def in_fraction(raw, fraction) -> bool:
    """Is this row in the [start, end) share? A stable hash of its question decides (not Python's hash())."""
    if fraction is None:
        return True
    question = raw.get("question") if isinstance(raw, dict) else None
    digest = hashlib.sha256(str(question).strip().encode("utf-8")).digest()
    return fraction[0] <= int.from_bytes(digest[:8], "big") / 2**64 < fraction[1]


def _read_file(path: str, fmt: str, split: str, limit: int | None, fraction=None) -> tuple:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            if in_fraction(raw, fraction):
                rows.append(_normalise(raw, fmt, where, len(rows), split))
            if limit and len(rows) >= limit:
                break
    return tuple(rows)


def _read_hub(src: DataSource, fmt: str, split: str) -> tuple:
    from datasets import load_dataset   # only users with network reach this

    ds = load_dataset(src.hub, src.subset, split=src.split)
    picked = [i for i in range(len(ds)) if in_fraction(ds[i], src.fraction)][: src.limit]
    return tuple(_normalise(dict(ds[i]), fmt, f"{src.hub}[{i}]", n, split) for n, i in enumerate(picked))


def _rows(task: TaskSpec, split: str, seed: int) -> tuple:
    if task.synthetic is not None:
        return _synthetic(task.synthetic.model_dump_json(), task.format, seed)[split]
    src: DataSource | None = getattr(task, split)
    if src is None:
        return ()
    if src.path is not None:
        return _read_file(src.path, task.format, split, src.limit, src.fraction)
    return _read_hub(src, task.format, split)


# ----------------------------------------------------------------------------- the two doors
def questions(task: TaskSpec, split: str, seed: int) -> list[dict]:
    """Rows of a split with every answer field removed: safe for distillation."""
    return [{k: v for k, v in row.items() if k not in ("answer", "target")} for row in _rows(task, split, seed)]


def gold(task: TaskSpec, split: str, seed: int) -> list[dict]:
    """Rows with answers. Only the bootstrap (gold, dev), eval and report may call this."""
    return [dict(row) for row in _rows(task, split, seed)]


def corpus(task: TaskSpec, seed: int) -> list[str]:
    """Texts a local tokenizer is built from: gold solutions and every question (no test answers)."""
    texts = [r["question"] + " " + r.get("answer", "") for r in gold(task, "gold", seed)]
    for split in ("dev", "distill", "test"):
        texts += [_user_text(r) for r in questions(task, split, seed)]
    return texts


# ----------------------------------------------------------------------------- prompts and answers
def _user_text(row: dict) -> str:
    if "options" in row:
        opts = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(row["options"]))
        return f"{row['question']} Options: {opts}"
    return row["question"]


def messages(row: dict, task: TaskSpec) -> list[dict]:
    """The chat prompt for a question (system prompt first when the task has one)."""
    msgs = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
    return msgs + [{"role": "user", "content": _user_text(row)}]


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LETTER = re.compile(r"\b([A-J])\b")


def extract_answer(text: str, fmt: str) -> str | None:
    """The final answer of a response: after the last '####', else the last number/letter.

    Tiny or random models often emit nothing usable: that is None, never an error.
    """
    if not text:
        return None
    tail = text.split("####")[-1] if "####" in text else text
    pattern = _LETTER if fmt == "multiple_choice" else _NUMBER
    found = pattern.findall(tail)
    if not found:
        return None
    answer = found[-1]
    if fmt != "multiple_choice" and "." in answer and float(answer).is_integer():
        answer = str(int(float(answer)))
    return answer
