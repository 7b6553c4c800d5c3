"""The folder (or hub id) a model reference loads from: `local_folder(ref)`, the one resolver that
every loader (runtime/lib/models.py, room.py, rl.py) and lm-eval (eval.py) use.

Two kinds of model have no such folder until one is made: a GGUF checkpoint (transformers reads
it, dequantised, but refuses to save it) and a depth-pruned model (`from` + `layers`). Each is made
ONCE into an ordinary model folder (safetensors weights, config, tokenizer, generation config) in
a cache shared by every stage and every spec: $DISTILLC_CACHE, default ~/.cache/distillc. A cache
entry is named by what it is made of (a GGUF file's size and content hash; a parent's identity and
the layers kept), never by where a file lies, and written to a temp folder then renamed, under a
file lock: stages that need it at once build it once, and nothing half-written is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from compiler.data.modelcheck import package_folder
from compiler.spec.contract import ModelRef

from . import ranks
from .errors import StageError

CACHE_ENV = "DISTILLC_CACHE"
FORMAT = 1  # what a cache entry holds; bump it when that changes, so older entries are not reused


def cache_root() -> Path:
    """$DISTILLC_CACHE (relative: to the current folder), default ~/.cache/distillc."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/distillc").expanduser().absolute()


def local_folder(ref: ModelRef) -> str:
    """What transformers' from_pretrained (and lm-eval's `pretrained=`) loads for `ref`: a local folder
    (made here first for a GGUF file or a pruned model) or a hub id. Not for `init:` models."""
    if ref.source == "init":
        raise ValueError(f"model {ref.name!r} is built from its init: block; it has no folder")
    if ref.source == "pruned":
        return str(pruned_folder(ref))
    if ref.gguf_file is not None:
        return str(dequantised_folder(gguf_source(ref)))
    return str(_base_folder(ref))


def _base_folder(ref: ModelRef) -> str | Path:
    """The folder a `package:` names, else `path` as given (a folder or a hub id)."""
    if ref.source != "package":
        assert ref.path is not None, "the planner gives every path model its path"
        return ref.path
    assert ref.package is not None, "source: package names its package"
    folder = package_folder(ref.package)
    if folder is None:
        raise StageError(f"model {ref.name!r}: no installed package {ref.package!r} (found at validate, gone now?)")
    return folder


def gguf_source(ref: ModelRef) -> Path:
    """The GGUF file of a reference on this machine: in its folder, or fetched into the hub cache."""
    base = _base_folder(ref)
    assert ref.gguf_file is not None, "called for a GGUF reference only"
    local = Path(base) / ref.gguf_file
    if ref.source == "package" or Path(base).is_dir():
        if not local.is_file():
            raise StageError(f"model {ref.name!r}: no GGUF file {str(local)!r}")
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(ref.path, ref.gguf_file, revision=ref.revision))


# ----------------------------------------------------------------------------- identity
def file_digest(path: Path) -> str:
    """sha256 of a file's bytes. Hashing a checkpoint takes seconds: the digest is remembered in the
    cache under the file's (path, size, mtime, inode), so a stage that starts again reads it back."""
    st = path.stat()
    memo_key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()
    memo = cache_root() / "digests" / memo_key[:32]
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    from .common import atomic_write_text

    atomic_write_text(memo, h.hexdigest() + "\n")
    return h.hexdigest()


def identity(ref: ModelRef) -> str:
    """What a model's weights are, independent of where they lie: a GGUF file's size and hash; a
    local folder's files' names, sizes and hashes; a hub model's repo and commit."""
    if ref.gguf_file is not None:
        file = gguf_source(ref)
        return f"gguf:{file.stat().st_size}:{file_digest(file)}"
    base = _base_folder(ref)
    if Path(base).is_dir():
        files = sorted(p for p in Path(base).rglob("*") if p.is_file() and not _skipped(p.relative_to(base)))
        listing = [(p.relative_to(base).as_posix(), p.stat().st_size, file_digest(p)) for p in files]
        return "folder:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    from huggingface_hub import hf_hub_download

    config = Path(hf_hub_download(ref.path, "config.json", revision=ref.revision))
    return f"hub:{ref.path}@{config.parent.name}"  # .../snapshots/<commit>/config.json


def _skipped(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def _entry_name(kind: str, *facts) -> str:
    return f"{kind}-v{FORMAT}-" + hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- building once
def build_once(name: str, build) -> Path:
    """The cache entry `name`, made by `build(folder)` if it is not there yet: into a temp folder,
    renamed into place when complete, under a file lock (the second of two builders waits, then
    finds it made). In a stage of several processes rank 0 builds and the others wait for the entry:
    once they are joined, transformers' save_pretrained writes nothing on another rank."""
    from filelock import FileLock

    root = cache_root() / "models"
    final = root / name
    while not ranks.is_main() and not final.is_dir():  # rank 0 builds it (or fails, and the launcher ends us)
        time.sleep(0.5)
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if final.is_dir():
            return final
        for stale in root.glob(f".{name}.tmp*"):  # left by a builder that died: only a lock holder builds
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp"))
        try:
            build(tmp)
            tmp.chmod(0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.is_dir():  # another builder without the lock (a filesystem without locks) won
                return final
            raise
    return final


def dequantised_folder(file: Path) -> Path:
    """The ordinary model folder of a GGUF checkpoint (made once)."""
    name = _entry_name("gguf", file.stat().st_size, file_digest(file))
    return build_once(name, lambda out: _dequantise(file, out))


def pruned_folder(ref: ModelRef) -> Path:
    """The folder of a depth-pruned model (made once from its parent's folder)."""
    parent, layers = ref.parent, ref.layers
    assert parent is not None and layers is not None, "the planner sets both for source: pruned"
    name = _entry_name("pruned", identity(parent), layers)
    return build_once(name, lambda out: _prune(local_folder(parent), layers, out, parent))


def kept_layers(depth: int, layers: int) -> list[int]:
    """`layers` of `depth` layer indices, evenly spaced, the first and the last kept (one layer: the
    first). Rounded half up in integers, so every machine keeps the same ones."""
    if not 1 <= layers <= depth:
        raise ValueError(f"cannot keep {layers} of {depth} layers")
    if layers == 1:
        return [0]
    return [(i * (depth - 1) * 2 + (layers - 1)) // (2 * (layers - 1)) for i in range(layers)]


def _dequantise(file: Path, out: Path) -> None:
    """transformers dequantises a GGUF file on load but will not save that model: build a plain model
    from its config and give it the dequantised weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .common import log

    log(f"dequantising {file.name} into the model cache {out.parent} (once)")
    quantised = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    model.save_pretrained(out)
    _save_tokenizer(AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name), out)


def _prune(parent_folder: str, layers: int, out: Path, parent: ModelRef) -> None:
    """Keep `layers` decoder layers of the parent (renumbered), its embeddings, final norm and head;
    save with the parent's tokenizer and generation config."""
    import copy
    import re

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .common import log

    kw = dict(revision=parent.revision, trust_remote_code=parent.trust_remote_code)
    source = AutoModelForCausalLM.from_pretrained(parent_folder, dtype="auto", **kw)
    depth = source.config.num_hidden_layers
    if layers > depth:
        raise StageError(f"model {parent.name!r} has {depth} layers; a model pruned from it cannot keep {layers}")
    keep = kept_layers(depth, layers)
    log(f"pruning {parent.name!r} to {layers} of {depth} layers {keep} into the model cache {out.parent} (once)")
    prefix = _layer_list(source, depth)
    config = copy.deepcopy(source.config)
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds travel with them
        config.layer_types = [config.layer_types[i] for i in keep]
    model = AutoModelForCausalLM.from_config(config, dtype=source.dtype, trust_remote_code=parent.trust_remote_code)
    pattern, renumber = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$"), {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in source.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match[1]) in renumber:
            state[f"{prefix}.{renumber[int(match[1])]}.{match[2]}"] = value
    model.load_state_dict(state)
    model.generation_config = source.generation_config
    model.save_pretrained(out)
    _save_tokenizer(AutoTokenizer.from_pretrained(parent_folder, **kw), out)


def _save_tokenizer(tok, out: Path) -> None:
    """Save without `local_files_only`: it records how the tokenizer was loaded (HF_HUB_OFFLINE set or
    not), not what it is, and a cache entry's bytes must not depend on the environment."""
    tok.init_kwargs.pop("local_files_only", None)
    tok.save_pretrained(out)


def _layer_list(model, depth: int) -> str:
    """The state-dict prefix of the model's decoder layers: its one ModuleList of `depth` blocks."""
    import torch

    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth
    ]
    if len(found) != 1:
        raise StageError(
            f"cannot tell which of {model.__class__.__name__}'s layer lists are its decoder layers "
            f"({found or 'none'} hold {depth}); depth pruning supports one list of decoder layers"
        )
    return found[0]
