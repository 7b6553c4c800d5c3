"""`distillc run [snakemake args]`: snakemake, safe to run again after a kill -9.

Snakemake's own lock (.snakemake/locks) outlives a killed run: the next `snakemake` refuses
until someone types `--unlock`, and then wants `--rerun-incomplete`. Snakemake cannot tell a
dead run's lock from a live one; the kernel can. `run` takes an flock on
.snakemake/distillc-run.lock (dropped by the kernel when its holder dies, kill -9 included),
then becomes snakemake (exec) still holding it, so the lock lives exactly as long as the run:
- taken: no run is alive in this folder, so Snakemake's locks are a dead run's: clear them
  (what `snakemake --unlock` removes) and rerun the jobs it left incomplete;
- held: a run is alive here: refuse (exit 2), whatever Snakemake's own lock says.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path

from ..spec.errors import DistillcError

RUN_FLAGS = ("--rerun-incomplete",)  # safe: no other run is alive when we get this far
LOCK = Path(".snakemake") / "distillc-run.lock"


class RunInProgress(DistillcError):
    exit_code = 2


def snakemake_command(*args: str) -> list[str]:
    """The snakemake of this environment: the same interpreter path (a rule param) every time."""
    beside = Path(sys.executable).parent / "snakemake"
    return [str(beside) if beside.exists() else shutil.which("snakemake") or "snakemake", *args]


def run(args: list[str]) -> int:
    """Exec snakemake in the current folder holding the run lock; returns only on refusal."""
    fd = _take_lock()
    shutil.rmtree(Path(".snakemake") / "locks", ignore_errors=True)
    os.set_inheritable(fd, True)
    cmd = snakemake_command(*RUN_FLAGS, *args)
    sys.stdout.flush(), sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 1  # not reached


def _take_lock() -> int:
    LOCK.parent.mkdir(exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunInProgress(
            f"another run is in progress in {Path.cwd()} (pid {holder})\n"
            "    hint: wait for it to finish, or stop it; a killed run needs no clean-up"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # exec keeps the pid: it is snakemake's
    return fd
