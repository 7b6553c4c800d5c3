"""pydantic's validation errors -> Problems a user can act on: file:line:col, the field, the bad
value, a did-you-mean and a hint (the field's own description when nothing better is known)."""

from __future__ import annotations

import re
import types
import typing

from pydantic import BaseModel

from .errors import Problem, available, did_you_mean, short
from .schema import ID_PATTERN, Spec
from .stages import KINDS, STAGE_CLASSES
from .yamlload import Positions, dotted


def booleans_as_numbers(data: dict, positions: Positions, file: str) -> list[Problem]:
    """YAML reads yes/no/on/off as booleans, and pydantic would quietly take them as 1/0."""
    problems = []

    def walk(value, path: tuple) -> None:
        if isinstance(value, (dict, list)):
            for key, item in value.items() if isinstance(value, dict) else enumerate(value):
                walk(item, path + (key,))
        elif isinstance(value, bool) and wants_number(path, data):
            line, col = positions.find(path)
            problems.append(
                Problem(
                    "expected a number, but YAML reads yes/no/on/off/true/false as a boolean",
                    dotted(path),
                    file,
                    line,
                    col,
                    short(value),
                    _help(path, data),
                )
            )

    walk(data, ())
    return problems


def wants_number(path: tuple, data: dict) -> bool:
    item = bool(path) and isinstance(path[-1], int)
    field = _field(path[:-1] if item else path, data)
    annotation = field.annotation if field is not None else None
    if item:
        annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return any(annotation == t for t in (int, float, int | None, float | None))


def problems(errors: list, data: dict, positions: Positions, file: str) -> list[Problem]:
    problems = []
    for err in errors:
        path = strip_tags(tuple(err["loc"]), data)
        problems.append(_problem(err, path, data, positions, file))
    return _dedupe(problems)


def strip_tags(loc: tuple, data: dict) -> tuple:
    """Drop pydantic's union tags: ('stages','t',<its kind>,'epochs') -> ('stages','t','epochs')."""
    if len(loc) >= 3 and loc[0] == "stages" and loc[2] in KINDS:
        stage = (data.get("stages") or {}).get(loc[1])
        if isinstance(stage, dict) and stage.get("kind") == loc[2]:
            return loc[:2] + loc[3:]
    return loc


def _problem(err: dict, path: tuple, data: dict, positions: Positions, file: str) -> Problem:
    value = _value_at(data, path)
    if err["type"] == "extra_forbidden":
        key = path[-1]
        fields = _fields_at(path[:-1], data)
        suggestion = did_you_mean(key, fields)
        msg = f'unknown key "{key}"' + (f"; {suggestion}" if suggestion else "")
        line, col = positions.key_position(path)
        return Problem(msg, dotted(path), file, line, col, short(value), available(fields) if fields else GENERIC_HINT)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return _bad_kind(path, value, positions, file)
    if err["type"] == "missing":
        line, col = positions.find(path[:-1])
        return Problem(
            f"required key is missing: {path[-1]}",
            dotted(path),
            file,
            line,
            col,
            None,
            _help(path, data) or GENERIC_HINT,
        )
    msg, hint = message(err, path, value, data)
    line, col = positions.find(path)
    return Problem(msg, dotted(path), file, line, col, short(value), hint or GENERIC_HINT)


GENERIC_HINT = "`distillc schema` lists every key and its allowed values"
_ID_TEXT = "must be a plain id: a lowercase letter, then lowercase letters, digits or _ (48 at most)"


def _bad_kind(path: tuple, value, positions: Positions, file: str) -> Problem:
    tag = value.get("kind") if isinstance(value, dict) else None
    if tag is None:
        line, col = positions.key_position(path)
        return Problem("a stage needs a `kind`", dotted(path), file, line, col, short(value), available(KINDS))
    if isinstance(tag, str):
        suggestion = did_you_mean(tag, KINDS)
        msg = f'unknown stage kind "{tag}"' + (f"; {suggestion}" if suggestion else "")
    else:
        msg = f"the stage kind must be a name, not {_what(tag)}"
    line, col = positions.find(path + ("kind",))
    return Problem(msg, dotted(path + ("kind",)), file, line, col, short(tag), available(KINDS))


def message(err: dict, path: tuple, value, data: dict) -> tuple[str, str]:
    """pydantic's text, reworded where it names internals or leaves out what to write instead."""
    kind, msg, ctx = err["type"], err["msg"].removeprefix("Value error, "), err.get("ctx") or {}
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if len(path) == 2 and path[0] == "stages":
            return (
                f"a stage must be a mapping of keys, not {_what(value)}",
                "write it as {kind: ..., <its fields>}, e.g. {kind: eval, model: student}; kinds: "
                + ", ".join(sorted(KINDS)),
            )
        fields = _fields_at(path, data)
        return f"should be a mapping of keys, not {_what(value)}", available(fields) if fields else _help(path, data)
    if value is None and kind.endswith(("_type", "_parsing")):
        default = _default(path, data)
        return "is empty (null) but needs a value", "give a value" + (
            f", or delete the line to use the default ({default})" if default is not None else ""
        )
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        suggestion = did_you_mean(str(value), allowed) if allowed else ""
        return "must be one of: " + ", ".join(allowed) + (f"; {suggestion}" if suggestion else ""), _help(path, data)
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return _ID_TEXT, _help(path, data)
    if kind == "int_from_float":
        return msg, "use a whole number"
    if kind == "int_parsing" and re.fullmatch(r"[-+]?[\d.]+e[-+]?\d+", str(value)):
        return msg, "write the number out: YAML reads 1e9 as text"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty", _help(path, data)
    if kind == "value_error":  # a model validator: its own hint ("...; hint: ..."), else its class's purpose
        msg, _, hint = msg.partition("; hint: ")
        return msg, hint or _doc(_model_at(path, data)) or _help(path, data)
    return msg, _help(path, data)


def _what(value) -> str:
    """A user's name for a YAML value's type."""
    if isinstance(value, bool):
        return "yes/no"
    names = {str: "a text", int: "a number", float: "a number", list: "a list", dict: "a mapping"}
    return names.get(type(value), "empty (null)" if value is None else type(value).__name__)


def _default(path: tuple, data: dict) -> str | None:
    field = _field(path, data)
    if field is None or field.is_required():
        return None
    default = field.get_default(call_default_factory=True)
    return None if default is None or isinstance(default, BaseModel) else repr(default)


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
    model: type[BaseModel] | None = Spec
    annotation = None
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
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # the stage union
        kind = value.get("kind") if isinstance(value, dict) else None
        return STAGE_CLASSES.get(kind) if isinstance(kind, str) else None  # a list is no kind (nor hashable)
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


def _field(path: tuple, data: dict):
    if not path or not isinstance(path[-1], str):
        return None
    model = _model_at(path[:-1], data)
    return model.model_fields.get(path[-1]) if model else None


def _doc(model: type[BaseModel] | None) -> str:
    return (model.__doc__ or "").strip().splitlines()[0] if model is not None and model.__doc__ else ""


def _help(path: tuple, data: dict) -> str:
    """The field's own description (help text lives on the schema), else its class's."""
    while path and isinstance(path[-1], int):  # a list item: the list's field says it
        path = path[:-1]
    field = _field(path, data)
    if field is not None and field.description:
        return field.description
    return _doc(_model_at(path, data))
