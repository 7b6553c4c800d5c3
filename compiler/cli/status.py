"""`distillc status`: where a run stands, stage by stage, from the files its stages write.

Everything comes from the build (stage configs, run order in spec.lock.json) and
from runs/<spec>/: declared outputs (done), each stage's progress.json (running:
its process is alive; failed: it died without its outputs), benchmarks/<id>.tsv
(wall time of a finished stage) and logs/<id>.log (last line of a failed one).
A sharded stage (compiler/spec/shards.py) has a row per shard under its own, each from the
shard job's files; the stage's row is its join's, or while that waits, how far its shards are.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..spec.contract import StageConfig, read_config
from ..spec.errors import UsageError
from ..spec.shards import shard_name

STYLES = {"done": "green", "running": "bold yellow", "failed": "bold red", "pending": "dim"}


@dataclass
class StageStatus:
    id: str
    kind: str
    state: str  # pending | running | done | failed
    progress: str = ""  # "25/300 steps (8%)"
    eta_s: float | None = None
    wall_s: float | None = None
    note: str = ""  # the log's last line, for a failed stage
    shard: bool = False  # a shard job's row, under its stage's (not counted as a stage)


def _alive(info: dict) -> bool:
    """Is the process that wrote progress.json still running? Another host's process is taken as alive."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    try:  # a killed process whose parent died too can stay a zombie until someone reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _outputs_current(cfg: StageConfig, root: Path, config_file: Path) -> bool:
    """All declared outputs exist and none is older than the stage's config (as `distillc plan` judges)."""
    paths = [root / p.rstrip("/") for p in cfg.outputs.values()]
    if not all(p.exists() for p in paths):
        return False
    return min(p.stat().st_mtime for p in paths) >= config_file.stat().st_mtime


def _wall_time(root: Path, cfg: StageConfig, job: str) -> float | None:
    """Seconds Snakemake's benchmark measured for a finished job (a sharded stage's: its shards' sum)."""
    try:
        header, values = (root / cfg.run_dir / "benchmarks" / f"{job}.tsv").read_text().splitlines()[:2]
        return float(dict(zip(header.split("\t"), values.split("\t")))["s"])
    except (OSError, ValueError, KeyError):
        return None


def _last_log_line(root: Path, cfg: StageConfig, job: str) -> str:
    try:
        lines = (root / cfg.run_dir / "logs" / f"{job}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return next((line.strip() for line in reversed(lines) if line.strip()), "(empty log)")[:200]


def _progress_text(info: dict | None) -> tuple[str, float | None]:
    """("done/total unit (pct%)", ETA in seconds) from a progress record."""
    if not info or not info.get("total"):
        return "", None
    done, total = info["done"], info["total"]
    text = f"{done}/{total} {info.get('unit', '')}".rstrip() + f" ({100 * done / total:.0f}%)"
    spent = info["updated"] - info["started"]
    eta = spent / done * (total - done) if done and done < total else None
    return text, eta


def stage_status(root: Path, build: Path, stage_id: str, done_ids: set[str], now: float, job: str = "") -> StageStatus:
    """The state of one job: a stage's (named by its id), or a shard job's (`job`, its name)."""
    job = job or stage_id
    config_file = build / "stages" / f"{job}.yaml"
    cfg = read_config(yaml.safe_load(config_file.read_text()))
    name, part = cfg.label, cfg.shard is not None
    info = _read_json(root / cfg.out_dir / "progress.json")
    text, eta = _progress_text(info)
    upstream_done = all(d in done_ids for ids in cfg.upstream.values() for d in ids)
    if _outputs_current(cfg, root, config_file) and upstream_done:
        # a stage may stop before its planned total (a dev-accuracy target): show what it did
        text = f"{info['done']} {info.get('unit', '')}".rstrip() if info and info.get("total") else ""
        return StageStatus(name, cfg.kind, "done", text, None, _wall_time(root, cfg, job), shard=part)
    if info is None or info.get("started", 0) < config_file.stat().st_mtime:
        return StageStatus(name, cfg.kind, "pending", shard=part)
    if _alive(info):
        return StageStatus(name, cfg.kind, "running", text or "starting", eta, now - info["started"], shard=part)
    wall = info["updated"] - info["started"]
    return StageStatus(name, cfg.kind, "failed", text, None, wall, _last_log_line(root, cfg, job), shard=part)


def sharded_status(root: Path, build: Path, stage_id: str, done_ids: set[str], now: float) -> list[StageStatus]:
    """A stage's row, then a row per shard when it is sharded. Until its join starts, a sharded stage is
    running (or failed) as its shards are, its progress their count done."""
    own = stage_status(root, build, stage_id, done_ids, now)
    cfg = read_config(yaml.safe_load((build / "stages" / f"{stage_id}.yaml").read_text()))
    count = cfg.params.shard_count()
    if count == 1:
        return [own]
    shards = [
        stage_status(root, build, stage_id, done_ids, now, shard_name(stage_id, k, count)) for k in range(1, count + 1)
    ]
    states = [s.state for s in shards]
    if own.state == "pending" and ("running" in states or "failed" in states):
        state = "running" if "running" in states else "failed"
        note = next((s.note for s in shards if s.note), "")
        own = StageStatus(own.id, own.kind, state, f"{states.count('done')}/{count} shards done", note=note)
    return [own, *shards]


def collect(root: Path, name: str) -> list[StageStatus]:
    """Every stage of build/<name>/, in run order (a sharded stage's shards after it)."""
    build = root / "build" / name
    lock = _read_json(build / "spec.lock.json")
    if lock is None:
        raise UsageError(
            f"{build}: no build of spec {name!r} here\n"
            f"    hint: run `distillc build <spec.yaml>` in {root} first (or pass --root)"
        )
    out: list[StageStatus] = []
    done: set[str] = set()
    now = time.time()
    for stage_id in lock["stages"]:
        rows = sharded_status(root, build, stage_id, done, now)
        if rows[0].state == "done":
            done.add(stage_id)
        out += rows
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def table(name: str, stages: list[StageStatus]):
    """A rich Table of the run."""
    from rich.table import Table

    counts = {s: sum(1 for x in stages if x.state == s and not x.shard) for s in STYLES}
    caption = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    t = Table(title=f"run {name}", caption=caption, title_justify="left", caption_justify="left")
    notes = any(s.note for s in stages)  # the log column only when a stage failed
    for column in ("stage", "kind", "state", "progress", "ETA", "wall") + (("last log line",) if notes else ()):
        t.add_column(column, no_wrap=column != "last log line", overflow="fold")
    for s in stages:
        t.add_row(
            s.id,
            s.kind,
            f"[{STYLES[s.state]}]{s.state}[/]",
            s.progress,
            _duration(s.eta_s),
            _duration(s.wall_s),
            *((s.note,) if notes else ()),
        )
    return t


def show(root: Path, name: str, watch: float | None) -> int:
    """Print the table once, or refresh it every `watch` seconds until no stage is running or pending."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not console.is_terminal:  # a pipe or a file: wide enough for whole stage names and log lines
        console = Console(width=160)
    if not watch:
        console.print(table(name, collect(root, name)))
        return 0
    with Live(table(name, collect(root, name)), console=console, auto_refresh=False) as live:
        while True:
            stages = collect(root, name)
            live.update(table(name, stages), refresh=True)
            states = {s.state for s in stages}
            if states == {"done"} or ("failed" in states and "running" not in states):
                return 0
            time.sleep(watch)
