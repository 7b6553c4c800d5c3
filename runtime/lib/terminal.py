"""Short progress lines on Snakemake's own terminal, while the full log goes to the rule's log file.

The rule runs `python -m runtime.<kind> ... --progress-fd 3 3>&2 > {log} 2>&1`: stdout and
stderr (every library's output, tracebacks, child processes) go to the log, and fd 3 is
Snakemake's stderr, which it shows on the terminal. A stage prints a few lines there:
`[student_sft] 400/1800 steps (22%), loss 0.83, eta 1:10`, at most one per 10% of the
total, or after 30 s with progress in between. The clock only decides what is printed,
never what is computed. Without --progress-fd (a stage run by hand), nothing is printed here:
stderr is the terminal already.
"""

from __future__ import annotations

import os
import time

from . import ranks

REPORT_EVERY = 10  # lines per stage: one per 10% of its total ...
QUIET_S = 30.0  # ... or one after 30 s that saw progress
_STATE: dict = {"stream": None, "done": None, "at": 0.0, "first": None, "seen": None, "main": True}


def attach(fd: int | None) -> None:
    """Use `fd` for progress lines if it is an open descriptor of this process.

    A process under accelerate's launcher (LOCAL_RANK is set) gets --progress-fd from its
    command line but not the descriptor itself, which may be another file there: skip it.
    runtime/lib/launch.py passes it on: there rank 0 prints progress, every rank its failure.
    """
    if fd is None or ("LOCAL_RANK" in os.environ and ranks.LAUNCHER not in os.environ):
        return
    _STATE["main"] = ranks.is_main()
    try:
        os.fstat(fd)
        _STATE["stream"] = os.fdopen(fd, "w", buffering=1, closefd=False)
    except OSError:
        _STATE["stream"] = None


def say(stage: str, text: str, every_process: bool = False) -> None:
    """One line on the terminal: `[stage] text` (a no-op without a terminal channel).

    A stage in several processes says things once, from rank 0; `every_process`: a failure,
    which any of them may meet.
    """
    stream = _STATE["stream"]
    if stream is None or not (_STATE["main"] or every_process):
        return
    try:
        stream.write(f"[{stage}] {text}\n")  # one short write: lines of parallel jobs do not mix
        stream.flush()
    except (OSError, ValueError):  # the terminal went away (a closed pipe): keep working
        _STATE["stream"] = None


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
        if seconds >= 60
        else f"{seconds} s"
    )


def due(done: int, total: int, now: float) -> bool:
    """Print this update? The first one, the last one, each 10% boundary, or after QUIET_S of silence."""
    last = _STATE["done"]
    if last is None:
        return True
    if done == last:
        return False
    step = max(1, total // REPORT_EVERY)
    return done >= total or done // step > last // step or now - _STATE["at"] >= QUIET_S


def progress(stage: str, done: int, total: int, unit: str, note: str = "") -> None:
    """A progress line when due, with an ETA from the rate since this process's first update."""
    if _STATE["stream"] is None:
        return
    _STATE["seen"] = (done, total, unit)
    now = time.monotonic()
    if not due(done, total, now):
        return
    first = _STATE["first"] = _STATE["first"] or (now, done)
    parts = [f"{done}/{total} {unit} ({100 * done / total:.0f}%)"]
    if note:
        parts.append(note)
    if done > first[1] and done < total:
        parts.append(f"eta {duration((now - first[0]) / (done - first[1]) * (total - done))}")
    _STATE.update(done=done, at=now)
    say(stage, ", ".join(parts))


def finished(stage: str, seconds: float) -> None:
    """The stage's last line: its wall time, and where it stopped if short of its total (a dev target)."""
    seen = _STATE["seen"]
    short = f" at {seen[0]}/{seen[1]} {seen[2]}" if seen and seen[0] < seen[1] else ""
    say(stage, f"done in {duration(seconds)}{short}")
