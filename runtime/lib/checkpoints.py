"""Checkpoints: one fingerprint, one torn-checkpoint rule, one atomic folder swap.

Every stage that resumes (generate's partial file, sft, reward_model, rl) keeps its
state in a side folder beside its outputs (Snakemake deletes a failed job's declared
outputs; this survives). Three rules, each in one place:
- `resume_dir`: the folder is emptied unless it was written for this very config
  and these very input files (`fingerprint`), so two runs are never mixed.
- `last_checkpoint`: the newest Trainer checkpoint whose trainer_state.json reads
  (the Trainer writes it last); a folder a kill left half-written is deleted.
- `swap_in`: a new folder replaces an old one by renames, and `current` finds the
  complete one at every instant, even after a kill between the two renames.
In several processes (runtime/lib/ranks.py) rank 0 alone empties and prunes the folder, the
others wait for it, then every process reads the same checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from compiler.spec.contract import StageConfig

from . import ranks
from .common import log, side_dir

STAMP = "fingerprint.txt"


def fingerprint(cfg: StageConfig) -> str:
    """What resumable state depends on: the resolved config and the input files (path, size, mtime).

    `resources` are left out: a job killed at its time limit and rerun with more time resumes. The
    number of processes is in (when more than one): it changes the batch of every step and the
    RNG states a checkpoint holds, so a run in 2 processes never resumes one made in 1.
    """
    data = cfg.model_dump(mode="json")
    if isinstance(data.get("params"), dict):
        data["params"].pop("resources", None)
    if ranks.world() > 1:
        data["processes"] = ranks.world()
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    for key in sorted(cfg.inputs):
        path = Path(cfg.inputs[key])
        for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            if f.is_file():
                st = f.stat()
                digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def resume_dir(cfg: StageConfig, name: str = "checkpoints") -> Path:
    """side_dir(cfg, name), emptied unless an earlier run of this very config and inputs wrote it."""
    path = Path(cfg.out_dir) / name
    if ranks.is_main():
        path = side_dir(cfg, name)
        stamp, stamp_file = fingerprint(cfg), path / STAMP
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            if any(path.iterdir()):
                log(f"{path}: left by another config or other inputs: starting over")
            shutil.rmtree(path)
            path.mkdir(parents=True)
            stamp_file.write_text(stamp)
    ranks.barrier()
    return path


def last_checkpoint(path: Path) -> str | None:
    """The newest complete Trainer checkpoint in `path`; torn ones (no readable trainer_state.json) are deleted."""
    complete = []
    for d in sorted(Path(path).glob("checkpoint-*"), key=_step):
        try:
            json.loads((d / "trainer_state.json").read_text())
            complete.append(d)
        except (OSError, ValueError):
            if ranks.is_main():
                log(f"dropping incomplete checkpoint {d}")
                shutil.rmtree(d)
    ranks.barrier()  # every process has read the folder before any trains (and writes into it)
    if complete:
        log(f"resuming from {complete[-1]}")
    return str(complete[-1]) if complete else None


def _step(d: Path) -> int:
    try:
        return int(d.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def finished_state(checkpoint: str | None):
    """The TrainerState of a checkpoint that had completed training, else None.

    Resumed from such a checkpoint, Trainer (transformers 5.24) trains one step
    too many (it checks max_steps only after a step): load it instead of training.
    """
    if not checkpoint:
        return None
    from transformers import TrainerState

    state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    return state if state.global_step >= state.max_steps else None


def train_or_load(trainer, ckpt: Path):
    """(trained model, TrainerState): resume from the last complete checkpoint, or load a finished one."""
    found = last_checkpoint(ckpt)
    state = finished_state(found)
    if state is not None:
        return type(trainer.model).from_pretrained(found), state
    trainer.train(resume_from_checkpoint=found)
    return trainer.model, trainer.state


# ----------------------------------------------------------------------------- folder swap
def _old(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def swap_in(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the complete folder `tmp`: dest -> .dest.old, tmp -> dest, drop the old.

    A kill between the two renames leaves no `dest` but a complete `.dest.old`, which
    `current` returns: at no instant is there no complete folder.
    """
    tmp, dest, old = Path(tmp), Path(dest), _old(Path(dest))
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def current(dest: Path) -> Path | None:
    """The complete folder a `swap_in` left: `dest`, else its old copy (killed mid-swap), else None."""
    dest = Path(dest)
    return dest if dest.exists() else _old(dest) if _old(dest).exists() else None
