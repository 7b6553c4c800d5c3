"""The planner's checks over the whole spec: ids, models (compiler/data/modelcheck.py), every stage's
wiring, engines, processes, data and sizes, and the run order. Problems collect on the planner
(compiler/plan.py), so that one pass reports all of them; each kind's own rules are its class's
`check` and `check_data`.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from ..data.check import check_task
from ..data.modelcheck import check_models
from ..data.sizes import check_context
from ..spec.schema import TaskSpec
from ..spec.shards import shard_name
from ..spec.stages import REPORT, ReportStage
from .engines import check_engine
from .processes import check_processes


def check_all(pl) -> tuple[TaskSpec, dict, list[str]]:
    """Every cross-stage rule; problems collect on the planner. Adds the implicit report stage."""
    spec = pl.spec
    stages = dict(spec.stages)
    reports = [s for s, v in stages.items() if v.kind == REPORT]
    if len(reports) > 1:
        pl.problem(("stages", reports[1]), "only one report stage is allowed", reports[1], f'keep "{reports[0]}"')
    if not reports and (REPORT in stages or REPORT in spec.models):
        pl.problem(
            ("stages" if REPORT in stages else "models", REPORT),
            f'there is no report stage, and the id "{REPORT}" is taken, so none can be added',
            REPORT,
            f"add a stage with `kind: {REPORT}` under another id",
        )
    elif not reports:
        stages[REPORT] = ReportStage(kind=REPORT)  # every workflow ends in a report
        pl.spec = spec.model_copy(update={"stages": stages})
    for name in sorted(set(spec.models) & set(spec.stages)):
        pl.problem(("stages", name), f'"{name}" is both a model id and a stage id', name, "rename one of them")
    _check_shard_names(pl)
    check_models(pl)
    task = pl.task()
    wired = {sid: pl.wire(sid) for sid in stages if stages[sid].kind != REPORT}
    for sid, st in stages.items():
        check_engine(pl, sid, st.default_resources.gpus)
        check_processes(pl, sid)
    _check_data(pl, task, wired)
    return task, wired, _order(pl, wired)


def _check_data(pl, task: TaskSpec, wired: dict) -> None:
    """Every row of the local data files, then sizes against the models (compiler/data/check.py, sizes.py)."""
    problems, sizes = check_task(task, pl.spec.seed)
    for p in problems:
        if p.file:
            pl.problems.append(p)
        else:  # the synthetic task: a problem of the spec itself
            pl.problem(tuple(p.field.split(".")), p.message, hint=p.hint)
    for sid in wired:
        pl.spec.stages[sid].check_data(pl, sid, sizes)
    check_context(pl, wired, sizes)


def _order(pl, wired: dict) -> list[str]:
    graph = {sid: {u for ids in up.values() for u in ids} for sid, (_, up) in wired.items()}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        pl.problem(
            ("stages", cycle[0]),
            "stages form a cycle: " + " -> ".join(reversed(cycle)),
            cycle[0],
            "a stage cannot read (directly or indirectly) its own output",
        )
        return []


def _check_shard_names(pl) -> None:
    """A shard's job name must not be a stage or model id (rules, configs and logs are named by it)."""
    taken = set(pl.spec.stages) | set(pl.spec.models)
    for sid, st in pl.spec.stages.items():
        count = st.shard_count()
        for index in range(1, count + 1) if count > 1 else ():
            name = shard_name(sid, index, count)
            if name in taken:
                pl.problem(
                    ("stages", sid, "shards"),
                    f'shard {index} of "{sid}" runs as job "{name}", which is also a stage or model id',
                    count,
                    f'rename "{name}"',
                )
