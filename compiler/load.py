"""Load a spec file: YAML -> validated `Spec`, or one SpecError listing every problem."""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .errors import Problem, SpecError, available, did_you_mean, short
from .schema import ID_PATTERN, KINDS, RESERVED_IDS, STAGE_CLASSES, Spec
from .yamlload import Positions, dotted, load_yaml


def load_spec(path: str | Path) -> Spec:
    """Parse and validate; raise SpecError with file:line:col for every problem."""
    return load_spec_with_positions(path)[0]


def load_spec_with_positions(path: str | Path) -> tuple[Spec, Positions]:
    """Like load_spec, also returning where each value sits (for the planner's errors)."""
    data, positions = load_yaml(path)
    problems = _bad_ids(data, positions, str(path))
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, data, positions, str(path))
    if problems:
        raise SpecError(problems)
    return spec, positions


def _bad_ids(data: dict, positions: Positions, file: str) -> list[Problem]:
    """Model and stage ids name rules and folders: plain identifiers only."""
    problems = []
    for section in ("models", "stages"):
        for key in data.get(section) or {} if isinstance(data.get(section), dict) else {}:
            if not re.match(ID_PATTERN, key) or key in RESERVED_IDS:
                line, col = positions.key_position((section, key))
                why = "is a reserved word" if key in RESERVED_IDS else "is not a valid id"
                problems.append(Problem(f"{section[:-1]} id {key!r} {why}", f"{section}.{key}", file, line, col,
                                        short(key), "use lowercase letters, digits and _, starting with a letter"))
    return problems


def _problems(exc: ValidationError, data: dict, positions: Positions, file: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = _strip_tags(tuple(err["loc"]), data)
        problems.append(_problem(err, path, data, positions, file))
    return _dedupe(problems)


def _strip_tags(loc: tuple, data: dict) -> tuple:
    """Drop pydantic's union tags: ('stages','t','sft','epochs') -> ('stages','t','epochs')."""
    if len(loc) >= 3 and loc[0] == "stages" and loc[2] in KINDS:
        stage = (data.get("stages") or {}).get(loc[1])
        if isinstance(stage, dict) and stage.get("kind") == loc[2]:
            return loc[:2] + loc[3:]
    return loc


def _problem(err: dict, path: tuple, data: dict, positions: Positions, file: str) -> Problem:
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    value = _value_at(data, path)
    hint = ""
    if kind == "extra_forbidden":
        key = path[-1]
        fields = _fields_at(path[:-1], data)
        suggestion = did_you_mean(key, fields)
        msg = f'unknown key "{key}"' + (f"; {suggestion}" if suggestion else "")
        hint = available(fields) if fields else ""
        line, col = positions.key_position(path)
        return Problem(msg, dotted(path), file, line, col, short(value), hint)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = value.get("kind") if isinstance(value, dict) else None
        if tag is None:
            msg, hint = "a stage needs a `kind`", available(KINDS)
            path_for_pos = path
        else:
            suggestion = did_you_mean(tag, KINDS)
            msg = f'unknown stage kind "{tag}"' + (f"; {suggestion}" if suggestion else "")
            hint, path_for_pos = available(KINDS), path + ("kind",)
            value = tag
        line, col = positions.find(path_for_pos)
        return Problem(msg, dotted(path_for_pos), file, line, col, short(value), hint)
    if kind == "missing":
        line, col = positions.find(path[:-1])
        hint = _field_help(path, data)
        return Problem(f"required key is missing: {path[-1]}", dotted(path), file, line, col, None, hint)
    line, col = positions.find(path)
    return Problem(msg, dotted(path), file, line, col, short(value), _field_help(path, data))


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.field, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _value_at(data, path: tuple):
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _model_at(path: tuple, data: dict) -> type[BaseModel] | None:
    """The schema class that validates the mapping at `path` (None if not a model)."""
    model, annotation = Spec, None
    for i, part in enumerate(path):
        if model is not None:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = _unwrap(field.annotation)
        elif typing.get_origin(annotation) in (dict, list):
            annotation = _unwrap(typing.get_args(annotation)[-1])
        else:
            return None
        model = _as_model(annotation, _value_at(data, path[: i + 1]))
    return model


def _as_model(annotation, value) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):   # the stage union
        kind = value.get("kind") if isinstance(value, dict) else None
        return STAGE_CLASSES.get(kind)
    return None


def _unwrap(annotation):
    """Optional[X] / Annotated[X, ...] / X | None -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _fields_at(path: tuple, data: dict) -> list[str]:
    model = _model_at(path, data)
    return list(model.model_fields) if model else []


def _field_help(path: tuple, data: dict) -> str:
    """The field's own description: help text lives on the schema."""
    if not path or not isinstance(path[-1], str):
        return ""
    model = _model_at(path[:-1], data)
    field = model.model_fields.get(path[-1]) if model else None
    return field.description or "" if field else ""
