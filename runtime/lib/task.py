"""Task data: the embedded synthetic task and users' jsonl/hub data, as uniform rows.

Two doors, on purpose:
- `questions(task, split)` returns rows WITHOUT answers: all distillation stages use it.
- `gold(task, split)` returns the answers: only the teacher bootstrap (gold/dev),
  eval and the after-the-fact report may call it.
Pure Python (no torch), so light stages import it cheaply.
"""

from __future__ import annotations

from compiler.data.rows import LETTERS, DataError, in_fraction, iter_jsonl, parse_row, read_rows, user_text  # noqa: F401 (re-exported)
from compiler.data.synthetic import SPLITS, synthetic  # noqa: F401 (re-exported)
from compiler.spec.contract import StageConfig
from compiler.spec.schema import DataSource, TaskSpec

from .answers import normalise
from .errors import StageError


# ----------------------------------------------------------------------------- files and hub
def _read_hub(src: DataSource, fmt: str, split: str) -> tuple:
    from datasets import load_dataset  # only users with network reach this

    ds = load_dataset(src.hub, src.subset, split=src.split)
    rows: list[dict] = []
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

    Targets are spelled as runtime.lib.answers spells a response's answer ("7.0" -> "7",
    "1,000" -> "1000"), so that every comparison against gold is like for like.
    """
    return [
        dict(row) | ({"target": normalise(row["target"])} if "target" in row else {})
        for row in _rows(task, split, seed)
    ]


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


def is_cut_off(row: dict) -> bool:
    """Did this response run to max_new_tokens without stopping? (generate's `cut_off`; rows from
    runs older than that field count as not cut off.)"""
    return bool(row.get("cut_off", False))


def distilled_responses(
    cfg: StageConfig, kind: str, keep_cut_off: bool = False
) -> tuple[list[tuple[list[dict], str]], int]:
    """((chat prompt, response text) pairs a student trains on, number of cut-off responses left out),
    from its stage's declared data input.

    A pseudo_reward input gives every majority-agreeing teacher response (all of them, not one
    per question), a generate input every response; empty ones are dropped, and so are responses
    cut off at max_new_tokens unless `keep_cut_off` (a student copies what it is shown: rambles
    that never stop teach it not to stop). Prompts come through the answer-free door: a response
    to a question outside the distill split is refused.
    """
    labels, responses = cfg.input_or_none("data", "labels"), cfg.input_or_none("data", "responses")
    if labels is not None:
        picked = [r for r in iter_jsonl(labels) if r["role"] == "teacher" and r["label"] == 1]
    elif responses is not None:
        picked = list(iter_jsonl(responses))
    else:
        raise StageError(f"{kind} stage {cfg.id!r}: no data_labels or data_responses input in its config")
    picked = [r for r in picked if r["text"].strip()]
    kept = picked if keep_cut_off else [r for r in picked if not is_cut_off(r)]
    prompts = {q["id"]: messages(q, cfg.task) for q in questions(cfg.task, "distill", cfg.spec_seed)}
    missing = sorted({r["question_id"] for r in kept} - set(prompts))
    if missing:
        raise StageError(
            f"{kind} stage {cfg.id!r}: {len(missing)} question ids are not distill questions "
            f"(e.g. {missing[:3]}); {kind} trains only on distill-split samples"
        )
    return [(prompts[r["question_id"]], r["text"]) for r in kept], len(picked) - len(kept)


TRAINING_DATA = "training_data.json"  # in an sft / distill_logits stage's folder, beside model/


def training_data_record(rows: int, cut_off_dropped: int, keep_cut_off: bool) -> dict:
    """What a training stage records about its data selection (the report reads it)."""
    return {"rows": rows, "cut_off_dropped": cut_off_dropped, "keep_cut_off": keep_cut_off}
