"""Read a GGUF checkpoint's header in pure Python: is it a GGUF file, how deep is the model, which
tokens does its tokenizer hold. The compiler checks models with it before any compute, so it reads bytes
itself rather than through torch or the `gguf` package (numpy); the weights are the runtime's
(runtime/lib/model_folders.py).

The layout (github.com/ggml-org/ggml, docs/gguf.md): b"GGUF", a uint32 version, uint64 tensor and
metadata counts, then metadata as (string key, uint32 type, value), little-endian.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class NotGguf(ValueError):
    """The file is not a GGUF checkpoint this reader understands (the message says why)."""


def is_gguf(path: str | Path) -> bool:
    """The file starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _read(fh: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise NotGguf("the file ends inside its header")
    return struct.unpack(fmt, data)[0]


def _string(fh: BinaryIO) -> str:
    n = _read(fh, "<Q")
    data = fh.read(n)
    if len(data) != n:
        raise NotGguf("the file ends inside its header")
    return data.decode("utf-8", "replace")


def _value(fh: BinaryIO, kind: int, keep: bool):
    """One metadata value (read, or only skipped past when `keep` is false)."""
    if kind in _SCALARS:
        return _read(fh, _SCALARS[kind])
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        inner, count = _read(fh, "<I"), _read(fh, "<Q")
        if inner in _SCALARS and not keep:
            fh.seek(count * struct.calcsize(_SCALARS[inner]), 1)
            return None
        values = [_value(fh, inner, keep) for _ in range(count)]
        return values if keep else None
    raise NotGguf(f"unknown metadata type {kind}")


def metadata(path: str | Path, keys: set[str]) -> dict:
    """The values of `keys` found in the file's metadata (the rest is skipped, not kept)."""
    with open(path, "rb", buffering=1 << 20) as fh:
        if fh.read(4) != MAGIC:
            raise NotGguf("it does not start with the GGUF magic bytes")
        version = _read(fh, "<I")
        if version < 2:
            raise NotGguf(f"GGUF version {version} is too old (2 and later are read)")
        _read(fh, "<Q")  # tensor count
        found = {}
        for _ in range(_read(fh, "<Q")):
            key, kind = _string(fh), _read(fh, "<I")
            value = _value(fh, kind, key in keys)
            if key in keys:
                found[key] = value
                if len(found) == len(keys):
                    break
        return found


def depth(path: str | Path) -> int | None:
    """The number of decoder layers (`<architecture>.block_count`), if the file says."""
    arch = metadata(path, {"general.architecture"}).get("general.architecture")
    return metadata(path, {f"{arch}.block_count"}).get(f"{arch}.block_count") if arch else None


def tokens(path: str | Path) -> list[str] | None:
    """The tokenizer's tokens in id order, if the file holds them."""
    return metadata(path, {"tokenizer.ggml.tokens"}).get("tokenizer.ggml.tokens")
