"""Safe YAML loading that remembers where every value came from.

PyYAML's SafeLoader already refuses tags that construct objects; on top of it
we refuse what a spec never needs and an attacker might send: huge files,
alias expansion bombs, duplicate keys (silently last-wins in PyYAML), and
non-mapping roots. Positions are kept per path so that pydantic's errors can
be reported as file:line:col.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, SpecError

MAX_BYTES = 1_000_000  # a spec is a page of text; anything bigger is a mistake
MAX_NODES = 100_000  # nodes after alias expansion: stops "billion laughs"
MAX_ALIASES = 100
MAX_DEPTH = 32  # a spec nests 5 levels; deeper is an attack on the recursive steps after this
# Tags a spec may hold (most only by implicit resolution). Anything else, e.g.
# !!python/object, is refused by name instead of being silently read as plain data.
_CORE = "tag:yaml.org,2002:"
ALLOWED_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary", "map", "seq")}

Path_ = tuple  # a path into the document: ("stages", "teacher", "temperatures", 1)


class Positions(dict):
    """Maps a document path to (line, col), both 1-based."""

    def find(self, path: Path_) -> tuple[int, int]:
        """Position of the deepest known prefix of `path`."""
        for cut in range(len(path), -1, -1):
            key = tuple(path[:cut])
            if key in self:
                return self[key]
        return (0, 0)

    def key_position(self, path: Path_) -> tuple[int, int]:
        """Position of a mapping key itself (for unknown-key errors)."""
        return self.get(("#key",) + tuple(path)) or self.find(path)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node tree into plain data, recording positions."""

    def __init__(self, file: str):
        self.file = file
        self.positions = Positions()
        self.problems: list[Problem] = []
        self.nodes = 0
        self.aliases = 0
        self._seen_ids: set[int] = set()

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        if id(node) in self._seen_ids:
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooBig()
        self._seen_ids.add(id(node))
        if len(path) > MAX_DEPTH:
            line, col = _mark(node)
            raise SpecError(
                [
                    Problem(
                        f"the spec nests more than {MAX_DEPTH} levels deep",
                        dotted(path[:3]) + "...",
                        self.file,
                        line,
                        col,
                        hint="a spec is a few levels of keys; flatten this",
                    )
                ]
            )
        self.positions.setdefault(path, _mark(node))
        if node.tag not in ALLOWED_TAGS:
            tag = "!!" + node.tag[len(_CORE) :] if node.tag.startswith(_CORE) else node.tag
            self._problem(
                node,
                path,
                f"the YAML tag {tag} is not allowed",
                "a spec holds plain values only: remove the tag",
                value=tag,
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return _scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._problem(key_node, path, "merge keys (<<) are not supported", "write the keys out")
                continue
            key = self.build(key_node, path + ("#keynode",))
            if not isinstance(key, (str, int, float, bool)) or key is None:
                self._problem(key_node, path, "mapping keys must be plain strings", "quote the key")
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                first = self.positions.get(("#key",) + path + (key,), (0, 0))
                self._problem(
                    key_node,
                    path + (key,),
                    f'duplicate key "{key}" (first defined on line {first[0]})',
                    "remove one of the two; YAML would silently keep only the last",
                )
                continue
            self.positions[("#key",) + path + (key,)] = _mark(key_node)
            out[key] = self.build(value_node, path + (key,))
        return out

    def _problem(self, node: yaml.Node, path: Path_, message: str, hint: str, value: str | None = None) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(message, dotted(path), self.file, line, col, value, hint))


class _TooBig(Exception):
    pass


_SCALARS = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    """Resolve a scalar the way SafeLoader would (ints, floats, bools, null, dates as text)."""
    if node.tag.endswith((":timestamp", ":binary")):
        return node.value  # keep as text: specs never need dates or bytes
    return _SCALARS.construct_object(node, deep=True)


def dotted(path: Path_) -> str:
    """("stages", "t", "temps", 1) -> "stages.t.temps[1]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("#keynode",):
            out += ("." if out else "") + str(part)
    return out


def load_yaml(path: str | Path, text: str | None = None) -> tuple[dict, Positions]:
    """Load a spec file into plain data + positions; raise SpecError on any problem."""
    file = str(path)
    if text is None:
        raw = _read_bytes(Path(path), file)
        text = _decode(raw, file)
    if not text.strip():
        raise SpecError(
            [Problem("the spec is empty", "", file, 1, 1, hint="start from specs/tiny.yaml or run `distillc schema`")]
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.context_mark and exc.problem:  # where the unclosed thing began
            msg += f" ({exc.context} on line {exc.context_mark.line + 1})"
        hint = (
            "indent with spaces: YAML forbids tabs"
            if "\\t" in msg
            else "check indentation, colons and quotes near this line"
        )
        raise SpecError([Problem(msg, "", file, line, col, hint=hint)]) from None
    except yaml.reader.ReaderError as exc:  # a control character: name it and where it is
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - text.rfind("\n", 0, exc.position)
        raise SpecError(
            [
                Problem(
                    f"YAML does not allow the character {chr(exc.character)!r} in a file",
                    "",
                    file,
                    line,
                    col,
                    hint="delete it (a stray control character from a copy-paste?)",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(f"YAML error: {exc}", "", file, 1, 1, hint="check the YAML syntax")]) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SpecError(
            [
                Problem(
                    f"the spec nests more than {MAX_DEPTH} levels deep",
                    "",
                    file,
                    1,
                    1,
                    hint="a spec is a few levels of keys; flatten this",
                )
            ]
        ) from None
    if node is None or not isinstance(node, yaml.MappingNode):
        line, col = _mark(node) if node is not None else (1, 1)
        kind = {yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}.get(type(node), "only comments")
        raise SpecError(
            [
                Problem(
                    f"the top level of a spec must be a mapping of keys, but this file holds {kind}",
                    "",
                    file,
                    line,
                    col,
                    hint="a spec starts with `name: ...`, `task: ...`, `stages: ...`",
                )
            ]
        )
    builder = _Builder(file)
    try:
        data = builder.build(node)
    except _TooBig:
        raise SpecError(
            [
                Problem(
                    "the spec expands to too many nodes (alias bomb?)",
                    "",
                    file,
                    1,
                    1,
                    hint=f"at most {MAX_ALIASES} alias uses and {MAX_NODES} nodes are allowed",
                )
            ]
        ) from None
    if builder.problems:
        raise SpecError(builder.problems)
    return data, builder.positions


def _read_bytes(path: Path, file: str) -> bytes:
    """Read at most MAX_BYTES + 1: stat() sizes lie for pipes and devices (/dev/zero)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([Problem("no such file", "", file, hint="check the path")]) from None
    except IsADirectoryError:
        raise SpecError(
            [Problem("this is a directory, not a spec file", "", file, hint="give the spec's .yaml file")]
        ) from None
    except OSError as exc:
        raise SpecError([Problem(f"cannot read the file: {exc.strerror}", "", file, hint="check the path")]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(
            [
                Problem(
                    f"the spec is larger than {MAX_BYTES} bytes",
                    "",
                    file,
                    1,
                    1,
                    hint="a spec is a short text file; put data in jsonl files it points to",
                )
            ]
        )
    return raw


def _decode(raw: bytes, file: str) -> str:
    if b"\x00" in raw:
        raise SpecError(
            [Problem("the file is binary, not a YAML text", "", file, 1, 1, hint="a spec is a UTF-8 text file")]
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            [Problem("the file is not valid UTF-8 text", "", file, line, 1, hint="save the spec as UTF-8")]
        ) from None
