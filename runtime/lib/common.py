"""What every stage CLI shares: read the resolved config, seed, write files atomically.

Kept free of torch at import time so that light stages (pseudo_reward, report)
start fast; `torch_setup` imports it on demand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from compiler.data.rows import DataError, iter_jsonl
from compiler.spec.contract import StageConfig, read_config
from compiler.spec.files import atomic_write_text

from . import ranks, startup, terminal
from .errors import EXIT_STAGE_FAILED, StageError

_STAGE: dict[str, Any] = {"kind": "?", "id": None, "config": None}  # what run_stage names when a stage fails


def parse_args(argv: list[str] | None, kind: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m runtime.{kind}", description=f"Run one {kind} stage.")
    parser.add_argument("--config", required=True, help="resolved stage config (build/<spec>/stages/<id>.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--progress-fd",
        type=int,
        default=None,
        help="a file descriptor for short progress lines (the rule passes Snakemake's stderr "
        "as 3; the full log goes to stdout/stderr)",
    )
    return parser.parse_args(argv)


def load_config(path: str | Path, kind: str) -> StageConfig:
    """Read a stage config through the same schema the compiler wrote it with."""
    try:
        cfg = read_config(yaml.safe_load(Path(path).read_text()))
    except (yaml.YAMLError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise DataError(
            f"{path}: not a stage config this distillc can read ({str(exc).splitlines()[0]}); "
            "run `distillc build` again"
        ) from None
    if cfg.kind != kind:
        raise StageError(f"{path}: a {cfg.kind} stage config was given to runtime.{kind}")
    return cfg


def start(argv: list[str] | None, kind: str):
    """Parse args, load the config, seed Python's RNG; return (cfg, stage params, args)."""
    args = parse_args(argv, kind)
    _STAGE.update(kind=kind, config=args.config)
    ranks.join()  # one of several processes (runtime/lib/launch.py): meet the others first
    terminal.attach(args.progress_fd)
    cfg = load_config(args.config, kind)
    _STAGE["id"] = cfg.label  # a shard job: "<id> shard k/N"
    terminal.say(cfg.label, f"{kind} started")
    startup.begin(cfg)
    random.seed(cfg.seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    log(f"{kind} stage {cfg.label!r} (spec {cfg.spec_name}, seed {cfg.seed})")
    if ranks.world() > 1:
        log(f"{ranks.world()} processes, {args.threads or 'default'} thread(s) each")
    stage = cfg.stage()
    if getattr(stage, "engine", "hf") != "hf":  # the compiler refuses it; a hand-edited config must not get further
        raise StageError(
            f"{args.config}: engine: {stage.engine} is not available yet in this version "
            "(it waits for a validation run on a GPU); use engine: hf"
        )
    progress(cfg, 0)
    return cfg, stage, args


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def torch_setup(seed: int, threads: int | None, device: str = "auto", precision: str = "auto"):
    """Seed torch, bound its threads; return (torch device, torch dtype)."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    # Seed directly: transformers.set_seed imports the Trainer stack (seconds) for the same three calls.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda" if use_cuda else "cpu")
    if precision == "auto":
        precision = "bf16" if use_cuda else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return dev, dtype


def log(message: str) -> None:
    """A line of the stage's log (stderr); in several processes, rank 0's only: the log reads as one process's."""
    if not ranks.is_main():
        return
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- files
def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def read_json(path: str | Path):
    """A JSON file an upstream stage wrote; a corrupt one is a DataError naming it."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(
            f"{path}{line}: not valid JSON (a truncated or corrupted file? delete it and run again to rebuild it)"
        ) from None


# ----------------------------------------------------------------------------- failing
def run_stage(main) -> None:
    """The one catch of every stage CLI (`python -m runtime.<kind>`): a failure prints ONE line
    naming the stage, its kind and, where a file is at fault, file:line; then exit 1.
    A StageError or DataError is expected (its message is the whole story); anything else is
    named with the line of our code it came through. DISTILLC_DEBUG=1 lets the traceback through."""
    t0 = time.monotonic()
    try:
        main()
        if _STAGE["id"]:
            terminal.finished(_STAGE["id"], time.monotonic() - t0)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):  # argparse has already said why
            raise
        _fail(str(exc.code))  # a library's sys.exit("..."): ours raise StageError
    except Exception as exc:
        if os.environ.get("DISTILLC_DEBUG") == "1":
            raise
        _fail(_describe(exc))


def _fail(message: str) -> None:
    who = f"stage {_STAGE['id']!r}" if _STAGE["id"] else f"stage config {_STAGE['config']}"
    text = " ".join(message.split()) + (f" ({ranks.who()})" if ranks.world() > 1 else "")  # one line
    print(f"distillc: {who} ({_STAGE['kind']}) failed: {text}", file=sys.stderr, flush=True)
    terminal.say(_STAGE["id"] or _STAGE["kind"], f"FAILED: {text}", every_process=True)
    sys.exit(EXIT_STAGE_FAILED)


def _describe(exc: Exception) -> str:
    """What went wrong, in the words that locate it: a DataError already names file:line."""
    if isinstance(exc, (StageError, DataError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    frame = next(
        (
            f
            for f in reversed(traceback.extract_tb(exc.__traceback__))
            if "/runtime/" in f.filename or "/compiler/" in f.filename
        ),
        None,
    )
    at = f" (at {Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{at}; DISTILLC_DEBUG=1 shows the traceback"


def side_dir(cfg: StageConfig, name: str) -> Path:
    """A folder beside the declared outputs (checkpoints, partial files).

    Snakemake deletes a failed job's declared outputs; what lives here survives,
    so a rerun resumes instead of starting over.
    """
    path = Path(cfg.out_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def hide_tied_weights_warning(model) -> None:
    """Drop the Trainer's `missing keys ['lm_head.weight']` warning on resume for tied embeddings.

    Checkpoints rightly leave a tied output head out (it is the input embedding, which
    they hold), so the weights are right; any other missing key is still reported.
    """
    import logging

    if not getattr(model.config, "tie_word_embeddings", False):
        return
    tied = repr(["lm_head.weight"])

    class TiedHead(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().endswith(f"checkpoint model loaded: {tied}.")

    logging.getLogger("transformers.trainer").addFilter(TiedHead())


# ----------------------------------------------------------------------------- progress
PROGRESS = "progress.json"
_STARTED: dict[str, float] = {}


def progress(cfg: StageConfig, done: int, total: int | None = None, unit: str = "", note: str = "") -> None:
    """Record how far this stage is, for `distillc status` (runs/<spec>/<id>/progress.json).

    Part of every stage's contract: generate counts questions, training stages
    steps, eval questions. The file sits beside the declared outputs, so it survives
    a failed job; the pid and host let `distillc status` tell running from dead.
    Times are only shown to people (elapsed, ETA), never used in a result.
    A few of these calls also print a short line on Snakemake's terminal (runtime/lib/terminal.py);
    `note` (e.g. "loss 0.83") goes on that line. A stage in several processes records rank 0's
    (they step together): one stage in `distillc status`, one line per update.
    """
    if not ranks.is_main():
        return
    now = time.time()
    started = _STARTED.setdefault(cfg.id, now)
    atomic_write_json(
        Path(cfg.out_dir) / PROGRESS,
        {
            "stage": cfg.id,
            "kind": cfg.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": round(started, 3),
            "updated": round(now, 3),
            "done": done,
            "total": total,
            "unit": unit,
        },
    )
    if total:
        log(f"progress: {done}/{total} {unit}" + (f", {note}" if note else ""))
        terminal.progress(cfg.label, done, total, unit, note)


def progress_callback(cfg: StageConfig, offset: int = 0, every_s: float = 1.0):
    """A TrainerCallback that records optimizer steps as progress (at most once per `every_s`).

    `offset` adds steps done by an earlier process (PPO restarts count from its snapshot).
    """
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        last, note = 0.0, ""

        def report(self, state, force: bool = False) -> None:
            if force or time.monotonic() - self.last >= every_s:
                self.last = time.monotonic()
                progress(cfg, state.global_step + offset, (state.max_steps or 0) + offset or None, "steps", self.note)

        def on_log(self, args, state, control, logs=None, **kwargs):
            # rl: the reward says more than its loss (GRPO/RLOO log `reward`, PPO `objective/scores`)
            for key, name in (("reward", "reward"), ("objective/scores", "reward"), ("loss", "loss")):
                if isinstance((logs or {}).get(key), (int, float)):
                    self.note = f"{name} {logs[key]:.3g}"
                    return

        def on_train_begin(self, args, state, control, **kwargs):
            startup.settle()  # libraries, models and data are loaded: training is the work
            self.report(state, force=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.report(state)

        def on_train_end(self, args, state, control, **kwargs):
            self.report(state, force=True)

    return Progress()
