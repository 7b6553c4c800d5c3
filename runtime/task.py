"""Task data: the embedded synthetic task and users' jsonl/hub data, as uniform rows.

Two doors, on purpose:
- `questions(task, split)` returns rows WITHOUT answers: all distillation stages use it.
- `gold(task, split)` returns the answers: only the teacher bootstrap (gold/dev),
  eval and the after-the-fact report may call it.
Pure Python (no torch), so light stages import it cheaply.
"""
from __future__ import annotations

from compiler.datarows import LETTERS, DataError, in_fraction, parse_row, read_rows, user_text  # noqa: F401 (re-exported)
from compiler.schema import DataSource, TaskSpec
from compiler.synthetic import SPLITS, synthetic  # noqa: F401 (re-exported)

from .answers import normalise


# ----------------------------------------------------------------------------- files and hub
def _read_hub(src: DataSource, fmt: str, split: str) -> tuple:
    from datasets import load_dataset   # only users with network reach this

    ds = load_dataset(src.hub, src.subset, split=src.split)
    rows = []
    for i in range(len(ds)):
        if not in_fraction(dict(ds[i]), src.fraction):
            continue
        row, why = parse_row(dict(ds[i]), fmt, split, len(rows))
        if row is None:
            raise DataError(f"{src.hub}[{i}]: {why}")
        rows.append(row)
        if src.limit and len(rows) >= src.limit:
            break
    return tuple(rows)


def _rows(task: TaskSpec, split: str, seed: int) -> tuple:
    if task.synthetic is not None:
        return synthetic(task.synthetic.model_dump_json(), task.format, seed)[split]
    src: DataSource | None = getattr(task, split)
    if src is None:
        return ()
    if src.path is not None:
        return read_rows(src.path, task.format, split, src.limit, src.fraction)
    return _read_hub(src, task.format, split)


# ----------------------------------------------------------------------------- the two doors
def questions(task: TaskSpec, split: str, seed: int) -> list[dict]:
    """Rows of a split with every answer field removed: safe for distillation."""
    return [{k: v for k, v in row.items() if k not in ("answer", "target")} for row in _rows(task, split, seed)]


def gold(task: TaskSpec, split: str, seed: int) -> list[dict]:
    """Rows with answers. Only the bootstrap (gold, dev), eval and report may call this.

    Targets are spelled as runtime.answers spells a response's answer ("7.0" -> "7",
    "1,000" -> "1000"), so that every comparison against gold is like for like.
    """
    return [dict(row) | ({"target": normalise(row["target"])} if "target" in row else {})
            for row in _rows(task, split, seed)]


def corpus(task: TaskSpec, seed: int) -> list[str]:
    """Texts a local tokenizer is built from: gold solutions and every question (no test answers)."""
    texts = [r["question"] + " " + r.get("answer", "") for r in gold(task, "gold", seed)]
    for split in ("dev", "distill", "test"):
        texts += [user_text(r) for r in questions(task, split, seed)]
    return texts


# ----------------------------------------------------------------------------- prompts
def messages(row: dict, task: TaskSpec) -> list[dict]:
    """The chat prompt for a question (system prompt first when the task has one)."""
    msgs = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
    return msgs + [{"role": "user", "content": user_text(row)}]

