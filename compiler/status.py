"""`distillc plan`: the DAG, and which stages a run would redo, and why.

Mirrors Snakemake's own triggers (missing output, newer input) plus the one
distillc adds: a stage's resolved config differs from the last build.
"""
from __future__ import annotations

from pathlib import Path

from .plan import Plan
from .render import _stage_yaml


def reasons(plan: Plan, root: Path) -> dict[str, str]:
    """Stage id -> why it would run ('' when up to date)."""
    why: dict[str, str] = {}
    for job in plan.jobs:
        built = root / plan.build_dir / "stages" / f"{job.id}.yaml"
        outputs = [root / p.rstrip("/") for p in job.outputs.values()]
        if not built.exists():
            why[job.id] = "not built yet"
        elif built.read_text() != _stage_yaml(job):
            why[job.id] = "its config changed since the last build"
        elif not all(p.exists() for p in outputs):
            why[job.id] = "outputs missing"
        elif any(why.get(d) for d in job.deps):
            why[job.id] = "upstream reruns: " + ", ".join(d for d in job.deps if why.get(d))
        elif min(p.stat().st_mtime for p in outputs) < built.stat().st_mtime:
            why[job.id] = "config is newer than its outputs"
        else:
            why[job.id] = ""
    return why


def describe(plan: Plan, root: Path) -> str:
    why = reasons(plan, root)
    width = max(len(j.id) for j in plan.jobs)
    lines = [f"plan for {plan.spec.name}: {len(plan.jobs)} stages (run order)"]
    for job in plan.jobs:
        deps = ", ".join(job.deps) if job.config.kind != "report" else "all stages"
        state = f"RUN  ({why[job.id]})" if why[job.id] else "ok"
        lines.append(f"  {job.id:<{width}}  {job.config.kind:<13} <- {deps or '-':<40} {state}")
    todo = sum(1 for w in why.values() if w)
    lines.append(f"{todo} of {len(plan.jobs)} stages would run")
    lines += [f"note: {j.id} is an ORACLE (reward: gold reads gold distill answers): an upper bound, not the method"
              for j in plan.jobs if j.config.kind == "rl" and j.config.params.get("reward") == "gold"]
    if plan.sweep:
        from .expand import describe as describe_sweep
        lines += describe_sweep(plan)
    return "\n".join(lines)
