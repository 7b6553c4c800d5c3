"""Data checked at validate: every local data file of the task, read once, streaming.

A bad row found here costs a second; found by a stage, it costs every stage upstream
of it. Each problem is `file:line: task.<split>: message`, all at once. Rows are read
by compiler.data.rows, the code the runtime reads them with, so both agree.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..spec.errors import Problem, short
from ..spec.schema import TaskSpec
from .rows import DataError, scan
from .sizes import SplitSizes, prompt_tokens
from .synthetic import SPLITS, synthetic

MAX_SYNTHETIC = 100_000  # questions generated at validate (~1 s); a larger synthetic task is not measured
MAX_PER_FILE = 10  # a file with a systematic fault would print one line per row; the first ten say it
NEEDS = {
    "gsm8k": "each line one JSON object: {\"question\": ..., \"answer\": \"... #### <number>\"}",
    "multiple_choice": "each line one JSON object: {\"question\": ..., \"options\": [...], \"answer\": \"<letter>\"}",
}
OVERLAP_HINT = (
    "eval would score questions the pipeline already saw; remove them from one file, or set "
    "task.allow_test_overlap: true if that is intended (e.g. test-time training on unlabelled test questions)"
)


def display(path: str | Path) -> str:
    """A data file's name in messages: relative to the current folder when inside it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def check_task(task: TaskSpec, seed: int) -> tuple[list[Problem], dict[str, SplitSizes]]:
    """Problems with the task's local data, and each readable split's sizes (for the size checks).

    Hub splits are read only at run time (validate never touches the network): no sizes.
    """
    if task.synthetic is not None:
        return _synthetic(task, seed)
    problems: list[Problem] = []
    sizes: dict[str, SplitSizes] = {}
    seen: dict[str, dict] = {}
    for split in SPLITS:
        src = getattr(task, split)
        if src is None or src.path is None or not Path(src.path).is_file():
            continue  # a missing file is the planner's problem, already reported
        sizes[split], seen[split] = _check_file(task, split, src.path, src.limit, problems, src.fraction)
    if not task.allow_test_overlap and "test" in seen:
        problems += _overlaps(seen)
    return problems, sizes


def _check_file(task: TaskSpec, split: str, path: str, limit: int | None, problems: list[Problem], fraction=None):
    """Read one file once: bad rows, duplicates within the split, and each prompt's length."""
    name, field, sizes = display(path), f"task.{split}", SplitSizes()
    seen: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    bad = 0

    def report(line: int, message: str, hint: str, value=None) -> None:
        nonlocal bad
        bad += 1
        if bad <= MAX_PER_FILE:
            problems.append(Problem(message, field, name, line, 0, value, hint, data=True))

    try:
        for line, row, why in scan(path, task.format, split, limit, fraction):
            if row is None:
                report(line, why, NEEDS[task.format])
                continue
            key = (" ".join(row["question"].split()), tuple(row.get("options", ())))
            if key in seen:
                report(
                    line,
                    f"the same question as line {seen[key]}",
                    "keep one copy: a repeated question counts twice in votes, training and accuracy",
                    short(row["question"], 60),
                )
                continue
            seen[key] = line
            if row["id"] in ids:
                report(
                    line,
                    f"the same id as line {ids[row['id']]}",
                    "ids name questions in every later file "
                    "(responses, labels): give each row its own id, or leave `id` out",
                    short(row["id"]),
                )
            ids.setdefault(row["id"], line)
            sizes.lengths.append(prompt_tokens(row, task.system_prompt))
            sizes.places.append(f"{name}:{line}")
    except OSError as exc:
        problems.append(
            Problem(
                f"cannot read the file: {exc.strerror}",
                field,
                name,
                1,
                0,
                None,
                "check the file's permissions",
                data=True,
            )
        )
        return sizes, {}
    if bad > MAX_PER_FILE:
        problems.append(
            Problem(
                f"... and {bad - MAX_PER_FILE} more bad rows in this file",
                field,
                name,
                line,
                0,
                None,
                "fix the rows above first: the rest are likely the same fault",
                data=True,
            )
        )
    if not seen and not bad:
        problems.append(Problem("the file holds no rows", field, name, 1, 0, None, NEEDS[task.format], data=True))
    return sizes, {key: f"{name}:{line}" for key, line in seen.items()}


def _overlaps(seen: dict[str, dict]) -> list[Problem]:
    """Test questions that also sit in gold, dev or distill: both places named."""
    problems = []
    for key, place in seen["test"].items():
        others = [f"task.{s} ({seen[s][key]})" for s in ("gold", "dev", "distill") if key in seen.get(s, {})]
        if others:
            file, _, line = place.rpartition(":")
            problems.append(
                Problem(
                    "this test question is also in " + " and ".join(others),
                    "task.test",
                    file,
                    int(line),
                    0,
                    short(key[0], 60),
                    OVERLAP_HINT,
                    data=True,
                )
            )
    return problems


def _synthetic(task: TaskSpec, seed: int) -> tuple[list[Problem], dict[str, SplitSizes]]:
    problems, sizes = _synthetic_once(task.model_dump_json(), seed)
    return list(problems), dict(sizes)


@functools.lru_cache(maxsize=16)
def _synthetic_once(task_json: str, seed: int) -> tuple[list[Problem], dict[str, SplitSizes]]:
    """Once per task and seed: a sweep plans every variant with the same few (a demo sweep of 19 variants
    and 3 seeds measured every prompt 19 times: 2.9 s of its build)."""
    task = TaskSpec.model_validate_json(task_json)
    cfg = task.synthetic
    assert cfg is not None, "called for synthetic tasks only"
    if cfg.gold_size + cfg.dev_size + cfg.distill_size + cfg.test_size > MAX_SYNTHETIC:
        return [], {}  # validate stays fast; the stages will generate (and check) them
    try:
        splits = synthetic(cfg.model_dump_json(), task.format, seed)
    except DataError as exc:
        return [
            Problem(str(exc), "task.synthetic", "", 0, 0, None, "lower the sizes, or raise max_number / max_steps")
        ], {}
    sizes = {}
    for split, rows in splits.items():
        sizes[split] = SplitSizes(
            [prompt_tokens(r, task.system_prompt) for r in rows],
            [f"synthetic {split} question {r['id']}" for r in rows],
        )
    return [], sizes
