"""`distillc plan`: what the next run would redo, and why, in Snakemake's own words.

Rather than re-implement Snakemake's rerun rules (missing outputs, changed inputs, params,
code, incomplete jobs ...), the plan asks Snakemake: it renders the spec into a scratch copy of
the workflow root, exactly as `distillc build` would leave it (unchanged files keep their
mtimes), with the real runs/ linked and Snakemake's records copied, and reads a dry run of the
same command `distillc run` executes. Nothing in the real root is written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..plan.planner import Plan
from ..plan.render import build_files
from ..plan.shards import workflow_jobs
from ..spec.errors import DistillcError
from ..spec.stages import REPORT
from .run import RUN_FLAGS, snakemake_command

PROJECT = Path(__file__).resolve().parents[2]
RECORDS = ("metadata", "incomplete")  # what Snakemake keeps in .snakemake/ to decide reruns
JOB = re.compile(r"^(?:local)?rule (\w+):$")


def reasons(plan: Plan, root: Path) -> dict[str, str]:
    """Job (a stage id, or a shard job's name) -> why the next run would run it ('' when it would not)."""
    with tempfile.TemporaryDirectory(prefix="distillc-plan-") as tmp:
        scratch = Path(tmp)
        _scratch_root(plan, root, scratch)
        proc = subprocess.run(
            snakemake_command("--dry-run", *RUN_FLAGS, "--nolock"),
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=600,
        )
    out = proc.stdout + proc.stderr
    if proc.returncode:
        tail = "\n    ".join(out.strip().splitlines()[-12:])
        raise DistillcError(f"snakemake --dry-run failed (exit {proc.returncode}):\n    {tail}")
    why = {job.rule: "" for job in workflow_jobs(plan)}
    rule = None
    for line in out.splitlines():
        if m := JOB.match(line.strip()):
            rule = m.group(1)
        elif rule in why and line.strip().startswith("reason:"):
            why[rule] = line.strip()[len("reason:") :].strip()
    return why


def _scratch_root(plan: Plan, root: Path, scratch: Path) -> None:
    """`root` as `distillc build` would leave it, in `scratch`: the build written, the rest linked."""
    for rel, text in build_files(plan, root).items():
        dst, real = scratch / plan.build_dir / rel, root / plan.build_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
        if _same_text(real, text):  # build keeps an unchanged file as it is, mtime included
            st = real.stat()
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    (scratch / "build" / "LATEST").write_text(plan.spec.name + "\n")
    snakefile = root / "Snakefile" if (root / "Snakefile").exists() else PROJECT / "Snakefile"
    if not snakefile.exists():
        raise DistillcError(f"no Snakefile in {root}: copy the project's Snakefile there")
    (scratch / "Snakefile").symlink_to(snakefile)
    if (root / "runs").exists():
        (scratch / "runs").symlink_to(root / "runs")
    for name in RECORDS:
        if (root / ".snakemake" / name).is_dir():
            shutil.copytree(root / ".snakemake" / name, scratch / ".snakemake" / name, symlinks=True)


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text() == text
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def describe(plan: Plan, root: Path) -> str:
    why = reasons(plan, root)
    width = max(len(j.id) for j in plan.jobs)
    shards: dict[str, list] = {}  # stage id -> its shard jobs
    for job in workflow_jobs(plan):
        if job.config.shard is not None:
            shards.setdefault(job.id, []).append(job)
    lines = [f"plan for {plan.spec.name}: {len(plan.jobs)} stages (run order)"]
    for job in plan.jobs:
        deps = ", ".join(job.deps) if job.config.kind != REPORT else "all stages"
        state = f"RUN  ({_short(plan, why[job.id])})" if why[job.id] else "ok"
        lines.append(f"  {job.id:<{width}}  {job.config.kind:<13} <- {deps or '-':<40} {state}")
        for shard in shards.get(job.id, []):  # its shard jobs, then its join (the stage's own line)
            label = f"{shard.config.shard.label} ({shard.rule})"
            state = f"RUN  ({_short(plan, why[shard.rule])})" if why[shard.rule] else "ok"
            lines.append(f"    {label:<{width + 57}} {state}")
    todo = sum(bool(why[j.id]) or any(why[s.rule] for s in shards.get(j.id, [])) for j in plan.jobs)
    lines.append(f"{todo} of {len(plan.jobs)} stages would run (Snakemake's dry run of `distillc run`)")
    lines += [f"note: {j.id} {note}" for j in plan.jobs if (note := j.config.params.plan_note())]
    lines += [f"note: {sid} runs as {len(jobs)} shard jobs, then a join" for sid, jobs in shards.items()]
    if plan.sweep:
        from ..plan.expand import describe as describe_sweep

        lines += describe_sweep(plan)
    return "\n".join(lines)


def _short(plan: Plan, reason: str) -> str:
    """Snakemake's reason, its file lists shortened: stage ids for upstream outputs, sorted."""
    producer = {p.rstrip("/"): j.rule for j in workflow_jobs(plan) for p in [*j.outputs.values(), j.log, j.benchmark]}
    clauses = []
    for clause in reason.split("; "):
        label, _, items = clause.partition(": ")
        if not items:
            clauses.append(clause)
            continue
        names = items.split(", ")
        if "another job" in label:
            names = [producer.get(n, n) for n in names]
        else:
            names = [n.removeprefix(f"{plan.run_dir}/").removeprefix(f"{plan.build_dir}/") for n in names]
        names = sorted(set(names))
        more = f" and {len(names) - 4} more" if len(names) > 5 else ""
        clauses.append(f"{label}: {', '.join(names[:4] if more else names)}{more}")
    return "; ".join(clauses)
