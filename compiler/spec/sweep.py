"""The spec's `sweep:` block: which keys it may name, their values, and the variants they make.

A sweep key is `seed`, `<stage id>.<field>` or `models.<name>.<field>` (deeper fields with
more dots, e.g. `student_rl.resources.cpus`); its value is a list. The variants are the
grid of the lists; `zip: [[key, key], ...]` walks lists of equal length together instead.
Every value is checked against the field it replaces, on the raw YAML data, so that sweep
problems are reported with file:line:col together with the rest of the spec's problems.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from pydantic import ValidationError

from .errors import Problem, available, did_you_mean, short
from .explain import message, wants_number
from .schema import ModelSpec
from .stages import STAGE_CLASSES
from .yamlload import Positions, dotted

MAX_VARIANTS = 1000  # a grid this big is a typo (a list pasted twice), not a plan for one machine
KEY_HINT = "a sweep key is `seed`, `<stage id>.<field>` or `models.<model id>.<field>`"


def key_path(key: str) -> tuple:
    """'seed' -> ('seed',); 'models.m.init.hidden_size' -> ('models','m','init','hidden_size');
    'student_rl.learning_rate' -> ('stages','student_rl','learning_rate')."""
    parts = tuple(key.split("."))
    if parts == ("seed",):
        return parts
    if parts[0] == "models" and len(parts) >= 3:
        return parts
    return ("stages",) + parts


def variants(sweep: dict) -> list[dict]:
    """The variants in order: one {key: value} per grid point (zipped groups move together)."""
    keys = [k for k in sweep if k != "zip"]
    groups = [list(g) for g in sweep.get("zip", [])]
    zipped = {k for g in groups for k in g}
    axes = []
    for k in keys:  # sweep order: a zip group sits where its first key is
        group = next((g for g in groups if g[0] == k), None)
        if group is not None:
            axes.append([dict(zip(group, vals)) for vals in zip(*(sweep[g] for g in group))])
        elif k not in zipped:
            axes.append([{k: v} for v in sweep[k]])
    return [{k: v for part in point for k, v in part.items()} for point in itertools.product(*axes)]


def apply(data: dict, values: dict) -> dict:
    """A deep copy of the spec's data with the variant's values set (and no sweep block)."""
    out = copy.deepcopy({k: v for k, v in data.items() if k != "sweep"})
    for key, value in values.items():
        node, path = out, key_path(key)
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- checks
def sweep_problems(data: dict, positions: Positions, file: str) -> list[Problem]:
    """Every problem of the sweep block, located at its key or list item."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict) or not sweep:
        return []  # absent, or not a mapping: the schema says so
    problems: list[Problem] = []

    def problem(path: tuple, message: str, value=None, hint: str = "", key: bool = False) -> None:
        line, col = positions.key_position(path) if key else positions.find(path)
        problems.append(Problem(message, dotted(path), file, line, col, None if value is None else short(value), hint))

    for key, values in sweep.items():
        if key == "zip":
            continue
        where = ("sweep", key)
        if not _key_ok(key, data, lambda msg, hint, where=where, name=key: problem(where, msg, name, hint, key=True)):
            continue
        if not isinstance(values, list):
            continue  # the schema says it should be a list
        if not values:
            problem(where, "must not be empty", values, "give at least one value, or delete the key")
        else:
            problems += _value_problems(key, values, data, positions, file)
    lengths = {k: len(v) for k, v in sweep.items() if k != "zip" and isinstance(v, list)}
    _zip_problems(sweep, lengths, problem)
    count = _count(sweep)
    if not problems and count > MAX_VARIANTS:
        problem(
            ("sweep",),
            f"the sweep makes {count} variants (at most {MAX_VARIANTS})",
            None,
            "split it into several specs, or zip lists that belong together",
        )
    return problems


def _key_ok(key: str, data: dict, problem) -> bool:
    """Does the key name something that exists? Reports (once) when not."""
    path = key_path(key)
    stages: dict = data["stages"] if isinstance(data.get("stages"), dict) else {}
    models: dict = data["models"] if isinstance(data.get("models"), dict) else {}
    if path == ("seed",):
        return True
    if path[0] == "models":
        if path[1] not in models:
            problem(f'unknown model "{path[1]}"' + _dym(path[1], models), available(models) if models else KEY_HINT)
            return False
        return _field_ok(ModelSpec, path[2], problem)
    if len(path) < 3:
        problem(f'"{key}" names no field' + _dym(key, ["seed"]), KEY_HINT + ", e.g. student_rl.learning_rate")
        return False
    stage = stages.get(path[1])
    if stage is None:
        problem(f'unknown stage "{path[1]}"' + _dym(path[1], stages), available(stages) if stages else KEY_HINT)
        return False
    cls = STAGE_CLASSES.get(str(stage.get("kind"))) if isinstance(stage, dict) else None
    if cls is None:
        return False  # the stage itself is broken: its own problem says why
    if cls.__name__ == "ReportStage":
        problem("the report is shared by every variant: its fields cannot be swept", "set them in the stage itself")
        return False
    if path[2] == "kind":
        problem("a stage's kind cannot be swept", "write one stage per kind instead")
        return False
    return _field_ok(cls, path[2], problem)


def _field_ok(cls, name: str, problem) -> bool:
    if name in cls.model_fields:
        return True
    fields = [f for f in cls.model_fields if f != "kind"]
    problem(f'unknown field "{name}"' + _dym(name, fields), available(fields))
    return False


def _dym(name: str, choices) -> str:
    suggestion = did_you_mean(name, choices)
    return f"; {suggestion}" if suggestion else ""


def _value_problems(key: str, values: list, data: dict, positions: Positions, file: str) -> list[Problem]:
    """Each value validated as if written in place of the field (deeper fields included)."""
    path, problems = key_path(key), []
    for i, value in enumerate(values):
        line, col = positions.find(("sweep", key, i))
        where = dotted(("sweep", key, i))
        if values.index(value) != i:
            problems.append(
                Problem(
                    "this value repeats an earlier one: the two variants would be the same run",
                    where,
                    file,
                    line,
                    col,
                    short(value),
                    "delete it",
                )
            )
            continue
        if isinstance(value, bool) and (path == ("seed",) or wants_number(path, data)):
            problems.append(
                Problem(
                    "expected a number, but YAML reads yes/no/on/off/true/false as a boolean",
                    where,
                    file,
                    line,
                    col,
                    short(value),
                    "write the number",
                )
            )
            continue
        for loc, err in _errors(key, value, data):
            msg, hint = message(err, path[:2] + loc, value, apply(data, {key: value}))
            problems.append(Problem(msg, where, file, line, col, short(value), hint))
    return problems


def _errors(key: str, value, data: dict) -> list[tuple[tuple, Any]]:
    """pydantic's errors about the swept field only (the entry's other problems are reported elsewhere)."""
    path = key_path(key)
    if path == ("seed",):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return [] if ok else [((), {"type": "value_error", "msg": "a seed must be a whole number >= 0", "loc": ()})]
    cls = ModelSpec if path[0] == "models" else STAGE_CLASSES[data["stages"][path[1]]["kind"]]
    node = apply(data, {key: value})[path[0]][path[1]]
    try:
        cls.model_validate(node)
    except ValidationError as exc:
        field = path[2:]
        return [
            (tuple(e["loc"]), e)
            for e in exc.errors()
            if tuple(e["loc"])[: len(field)] == field or (not e["loc"] and e["type"] == "value_error")
        ]
    return []


def _zip_problems(sweep: dict, lengths: dict, problem) -> None:
    """`zip: [[a, b], ...]`: each group names sweep keys of equal length, each key in one group."""
    groups = sweep.get("zip")
    if groups is None:
        return
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        problem(
            ("sweep", "zip"),
            "should be a list of key groups, e.g. [[a.learning_rate, b.learning_rate]]",
            groups,
            "each group's lists are walked together instead of crossed",
        )
        return
    seen: set = set()
    for gi, group in enumerate(groups):
        for ki, k in enumerate(group):
            if not isinstance(k, str) or k not in sweep or k == "zip":
                problem(
                    ("sweep", "zip", gi, ki),
                    f'"{k}" is not a key of this sweep' + _dym(k, list(sweep)),
                    k,
                    "zip names keys that the sweep block lists",
                )
            elif k in seen:
                problem(("sweep", "zip", gi, ki), f'"{k}" is in two zip groups', k, "keep it in one group")
            seen.add(k)
        sizes = {k: lengths[k] for k in group if isinstance(k, str) and k in lengths}
        if len(set(sizes.values())) > 1:
            problem(
                ("sweep", "zip", gi),
                "zipped lists must have the same length: " + ", ".join(f"{k} has {n}" for k, n in sizes.items()),
                None,
                "give each list one value per variant",
            )


def _count(sweep: dict) -> int:
    """How many variants, without listing them (a zip group counts once)."""
    groups: list = sweep["zip"] if isinstance(sweep.get("zip"), list) else []
    zipped = {k for g in groups if isinstance(g, list) for k in g if isinstance(k, str)}
    sizes = [len(v) for k, v in sweep.items() if k != "zip" and k not in zipped and isinstance(v, list)]
    sizes += [
        min((len(sweep[k]) for k in g if isinstance(sweep.get(k), list)), default=1)
        for g in groups
        if isinstance(g, list)
    ]
    return math.prod(sizes)
