"""Load a spec file: YAML -> validated `Spec`, or one SpecError listing every problem."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from pydantic import ValidationError

from ..spec.errors import Problem, SpecError, short
from ..spec.explain import booleans_as_numbers, strip_tags
from ..spec.explain import problems as explain
from ..spec.schema import ID_PATTERN, RESERVED_IDS, Spec
from ..spec.yamlload import Positions, load_yaml


def load_spec(path: str | Path) -> Spec:
    """Parse and validate; raise SpecError with file:line:col for every problem."""
    return load_spec_with_positions(path)[0]


def load_spec_with_positions(path: str | Path) -> tuple[Spec, Positions]:
    """Like load_spec, also returning where each value sits (for the planner's errors)."""
    data, positions = _unwrap_lock(*load_yaml(path))
    file, errors = str(path), []
    booleans = booleans_as_numbers(data, positions, file)
    problems = _bad_ids(data, positions, file) + booleans + _sweep_problems(data, positions, file)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        said = {p.field for p in booleans}  # pydantic's "greater than 0" for `no` would only confuse
        problems += [p for p in explain(errors, data, positions, file) if p.field not in said]
    if problems:
        raise SpecError(problems + _reference_problems(data, errors, positions, file))
    return spec, positions


def _sweep_problems(data, positions: Positions, file: str) -> list[Problem]:
    from ..spec.sweep import sweep_problems

    return sweep_problems(data, positions, file) if isinstance(data, dict) else []


def _unwrap_lock(data: dict, positions: Positions) -> tuple[dict, Positions]:
    """A lock file (build/<name>/spec.lock.json) holds the resolved spec: build from that."""
    if not (isinstance(data, dict) and "spec_hash" in data and isinstance(data.get("spec"), dict)):
        return data, positions
    inner = Positions()
    for key, where in positions.items():
        if key[:1] == ("spec",):
            inner[key[1:]] = where
        elif key[:2] == ("#key", "spec"):
            inner[("#key",) + key[2:]] = where
    return data["spec"], inner


def _valid_id(key: str) -> bool:
    return bool(re.fullmatch(ID_PATTERN, key)) and key not in RESERVED_IDS


def _bad_ids(data: dict, positions: Positions, file: str) -> list[Problem]:
    """Model and stage ids name rules and folders: plain identifiers only."""
    problems = []
    for section in ("models", "stages"):
        for key in data.get(section) or {} if isinstance(data.get(section), dict) else {}:
            if not _valid_id(key):
                line, col = positions.key_position((section, key))
                if key in RESERVED_IDS:
                    why, hint = "is a reserved word", "pick another id: Python keywords and Snakemake's names are taken"
                else:
                    why, hint = "is not a valid id", "use lowercase letters, digits and _, starting with a letter"
                problems.append(
                    Problem(f"{section[:-1]} id {key!r} {why}", f"{section}.{key}", file, line, col, short(key), hint)
                )
    return problems


def _reference_problems(data: dict, errors: list, positions: Positions, file: str) -> list[Problem]:
    """The planner's checks on what did validate, so that one pass reports schema and
    reference problems together. Each bad value is dropped (its default stands in); an
    entry that still fails is left out, and references to it are not judged."""
    from .planner import check_references

    partial = copy.deepcopy(data)
    for err in errors:
        _drop(partial, strip_tags(tuple(err["loc"]), data))
    partial["name"] = "spec"  # only ids and references matter here
    broken = set()  # bad ids, entries dropped whole (e.g. an unknown kind), entries that still fail
    for section in ("models", "stages"):
        if isinstance(data.get(section), dict) and isinstance(partial.get(section), dict):
            broken |= {k for k in data[section] if not _valid_id(k) or k not in partial[section]}
    for _ in range(3):
        for section in ("models", "stages"):
            if isinstance(partial.get(section), dict):
                partial[section] = {k: v for k, v in partial[section].items() if k not in broken}
        try:
            spec = Spec.model_validate(partial)
        except ValidationError as exc:  # e.g. a required field was the bad one
            broken |= {e["loc"][1] for e in exc.errors() if e["loc"][0] in ("models", "stages") and len(e["loc"]) > 1}
            continue
        return check_references(spec, positions, file, frozenset(broken))
    return []


def _drop(data, loc: tuple) -> None:
    """Remove the value at `loc`, if it is there (a bad list item: the whole list)."""
    while loc and isinstance(loc[-1], int):
        loc = loc[:-1]
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(data, dict) and loc:
        data.pop(loc[-1], None)
