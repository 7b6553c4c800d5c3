"""The planner core: one spec without a sweep -> Plan. Resolve references, check the DAG, fix every
job's inputs and outputs.

Everything that can be checked before a GPU is spent is checked (compiler/plan/checks.py)
before a job is made, and all problems are reported together. What a stage reads and
writes comes from its class's facts (compiler/spec/stages.py). compiler/plan.py chooses between
this and a sweep's expansion (compiler/plan/expand.py), which plans each variant here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..data.modelcheck import tokenizer_mismatch
from ..spec.contract import ModelRef, StageConfig, config_class
from ..spec.errors import Problem, SpecError, article, available, did_you_mean, short
from ..spec.layout import LOCK_FILE, build_dir, run_dir
from ..spec.schema import Spec, TaskSpec
from ..spec.stagekind import BENCHMARK, LOCK, Resources, input_key
from ..spec.stages import REPORT, STAGE_CLASSES, lineage, report_roles
from ..spec.yamlload import Positions, dotted
from .checks import check_all


@dataclass
class Job:
    config: StageConfig
    inputs: dict[str, str]
    outputs: dict[str, str]  # directories end with "/"
    resources: Resources
    log: str
    benchmark: str
    deps: list[str] = field(default_factory=list)
    # Inputs read for what they say, whose change alone must rerun nothing (Snakemake's ancient()):
    # the lock changes with resources and package versions, which rerun no stage.
    ancient: tuple[str, ...] = ()
    name: str = ""  # a shard job's own name (compiler/plan/shards.py); a stage's job is named by its id

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def rule(self) -> str:
        """The Snakemake rule, and the name of the job's stage config and resources entry."""
        return self.name or self.id


@dataclass
class Plan:
    spec: Spec
    jobs: list[Job]  # in topological order, report last
    run_dir: str
    build_dir: str
    resolved: Spec  # paths made absolute: what the lock file records
    sweep: dict | None = None  # the variants and their stages, when the spec sweeps (compiler/plan/expand.py)

    def job(self, stage_id: str) -> Job:
        return next(j for j in self.jobs if j.id == stage_id)


class Planner:
    def __init__(self, spec: Spec, positions: Positions, file: str, root: Path, unchecked: frozenset = frozenset()):
        self.spec, self.positions, self.file, self.root = spec, positions, file, root
        self.unchecked = unchecked  # ids of entries that failed validation: references to them are not judged
        self.spec_dir = Path(file).resolve().parent if file else root
        self.problems: list[Problem] = []
        self.run_dir = run_dir(spec.name)
        self.build_dir = build_dir(spec.name)

    # ------------------------------------------------------------------ problems
    def problem(self, path: tuple, message: str, value=None, hint: str = "") -> None:
        whole_entry = len(path) == 2 and path[0] in ("models", "stages")  # point at its id
        line, col = self.positions.key_position(path) if whole_entry else self.positions.find(path)
        self.problems.append(
            Problem(message, dotted(path), self.file, line, col, None if value is None else short(value), hint)
        )

    def unknown(self, path: tuple, name: str, choices: list[str], what: str) -> None:
        suggestion = did_you_mean(name, choices)
        msg = f'unknown {what} "{name}"' + (f"; {suggestion}" if suggestion else "")
        self.problem(path, msg, name, available(choices) if choices else f"define a {what} first")

    # ------------------------------------------------------------------ references
    def stage_ref(self, path: tuple, name: str, kinds: tuple[str, ...]) -> str | None:
        """A reference that must name a stage of one of `kinds`."""
        stage = self.spec.stages.get(name)
        if name in self.unchecked:
            return None
        fitting = [s for s, v in self.spec.stages.items() if v.kind in kinds]
        if stage is None:
            self.unknown(path, name, fitting, "/".join(kinds) + " stage")
            return None
        if stage.kind not in kinds:
            self.problem(
                path,
                f'"{name}" is {article(stage.kind)} stage; this needs {article(" or ".join(kinds))} stage',
                name,
                available(fitting) if fitting else f"add {article(kinds[0])} stage and name it here",
            )
            return None
        return name

    def model_ref(self, path: tuple, name: str) -> ModelRef | None:
        """A reference to a declared model or to a stage that produces one."""
        if name in self.unchecked:
            return None
        if name in self.spec.models:
            return self.declared_ref(name)
        stage = self.spec.stages.get(name)
        if stage is not None and stage.produces_model:
            base = lineage(self.spec.stages, name)[-1]
            return ModelRef(
                name=name, source="stage", path=self.out(name, "model"), base=base if base in self.spec.models else name
            )
        if stage is not None:
            kinds = "/".join(k for k, c in STAGE_CLASSES.items() if c.produces_model)
            self.problem(
                path,
                f'"{name}" is {article(stage.kind)} stage, which produces no model',
                name,
                f"use a model id or {article(kinds)} stage",
            )
            return None
        choices = list(self.spec.models) + [s for s, v in self.spec.stages.items() if v.produces_model]
        self.unknown(path, name, choices, "model or model-producing stage")
        return None

    def declared_ref(self, name: str) -> ModelRef | None:
        """A model of `models:` as the runtime finds it (None for a `from` whose parent is broken:
        compiler/data/modelcheck.py reports that)."""
        m = self.spec.models[name]
        if m.init is not None:
            return ModelRef(name=name, source="init", init=m.init, base=name)
        if m.parent is not None:
            parent = self.spec.models.get(m.parent)
            if parent is None or m.parent in self.unchecked or parent.parent is not None or parent.init is not None:
                return None
            return ModelRef(
                name=name,
                source="pruned",
                parent=self.declared_ref(m.parent),
                layers=m.layers,
                trust_remote_code=parent.trust_remote_code,
                base=name,
            )
        if m.package is not None:
            return ModelRef(
                name=name,
                source="package",
                package=m.package,
                gguf_file=m.gguf_file,
                trust_remote_code=m.trust_remote_code,
                base=name,
            )
        return ModelRef(
            name=name,
            source="path",
            path=self._model_path(m.path or ""),
            gguf_file=m.gguf_file,
            revision=m.revision,
            trust_remote_code=m.trust_remote_code,
            base=name,
        )

    def _model_path(self, value: str) -> str:
        local = self.local_path(value)
        return str(local) if local.is_dir() else value

    def local_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.spec_dir / p)

    def tokenizer_mismatch(self, teacher: str, student: str) -> str | None:
        """Why two declared models cannot share a tokenizer, or None (compiler/data/modelcheck.py): for a
        kind's `check`, which reads the spec alone and reaches model files through the planner."""
        return tokenizer_mismatch(self, teacher, student)

    def out(self, stage_id: str, name: str) -> str:
        return f"{self.run_dir}/{stage_id}/{self.spec.stages[stage_id].outputs[name].file}".rstrip("/")

    # ------------------------------------------------------------------ task
    def task(self) -> TaskSpec:
        task = self.spec.task.model_copy(deep=True)
        for split in ("gold", "dev", "distill", "test"):
            src = getattr(task, split)
            if src is not None and src.path is not None:
                local = self.local_path(src.path).resolve()
                if not local.is_file():
                    self.problem(
                        ("task", split, "path"),
                        f"no such data file: {local}",
                        src.path,
                        "paths are relative to the spec's folder",
                    )
                src.path = str(local)
        return task

    def has_gold(self) -> bool:
        t = self.spec.task
        return (t.synthetic is not None and t.synthetic.gold_size > 0) or t.gold is not None

    # ------------------------------------------------------------------ per stage
    def wire(self, sid: str) -> tuple[dict[str, ModelRef], dict[str, list[str]]]:
        """Resolve a stage's references (its class's `refs`): models by role, upstream stage ids by role."""
        st, p = self.spec.stages[sid], ("stages", sid)
        models: dict[str, ModelRef] = {}
        up: dict[str, list[str]] = {}
        for ref in st.refs:
            value = st.ref_value(self, sid, ref.field)
            if value is None:
                continue
            if ref.to_model:
                model = self.model_ref(p + (ref.field,), value)
                if model is not None:
                    models[ref.field] = model
                    if model.source == "stage":
                        up.setdefault(ref.field, []).append(value)
                continue
            listed = isinstance(value, list)
            for i, name in enumerate(value if listed else [value]):
                if self.stage_ref(p + ((ref.field, i) if listed else (ref.field,)), name, ref.kinds):
                    up.setdefault(ref.field, []).append(name)
        st.check(self, sid)
        return models, up


def plan_spec(spec: Spec, positions: Positions, file: str, root: Path) -> Plan:
    """Check cross-stage rules and produce jobs in run order; raise SpecError on problems (no sweep)."""
    pl = Planner(spec, positions, file, root)
    task, wired, order = check_all(pl)
    if pl.problems:
        raise SpecError(pl.problems)
    jobs = [_job(pl, sid, task, *wired[sid]) for sid in order]
    report_id = next(s for s, v in pl.spec.stages.items() if v.kind == REPORT)
    jobs.append(_report_job(pl, report_id, task, jobs))
    return Plan(spec=pl.spec, jobs=jobs, run_dir=pl.run_dir, build_dir=pl.build_dir, resolved=resolved_spec(pl, task))


def resolved_spec(pl: Planner, task: TaskSpec) -> Spec:
    """The spec with data and model paths made absolute: the lock holds it, and it rebuilds
    the same workflow from anywhere (`distillc build build/<name>/spec.lock.json`)."""
    models = {
        name: m.model_copy(update={"path": pl._model_path(m.path)}) if m.path else m
        for name, m in pl.spec.models.items()
    }
    return pl.spec.model_copy(update={"task": task, "models": models})


def check_references(spec: Spec, positions: Positions, file: str, unchecked: frozenset) -> list[Problem]:
    """The cross-stage checks alone, for a spec whose broken entries (`unchecked`) were left out."""
    pl = Planner(spec, positions, file, Path.cwd(), unchecked)
    check_all(pl)
    return pl.problems


def _job(pl: Planner, sid: str, task: TaskSpec, models: dict, up: dict) -> Job:
    """A stage's job: each upstream stage's passed-on outputs are inputs, named by the referencing field."""
    stages, st = pl.spec.stages, pl.spec.stages[sid]
    listed = {r.field for r in st.refs if isinstance(getattr(st, r.field, None), list)}
    inputs = {}
    for role, ids in up.items():
        for i, u in enumerate(ids):
            index = None if len(ids) == 1 and role not in listed else i
            for name, out in stages[u].outputs.items():
                if out.passed_on:
                    inputs[input_key(role, name, index)] = pl.out(u, name)
    inputs.update(st.build_inputs(sid, pl.spec.name, pl.build_dir))
    return _make_job(pl, sid, task, models, inputs, up, st)


def _report_job(pl: Planner, sid: str, task: TaskSpec, jobs: list[Job]) -> Job:
    """The report reads every output, every benchmark and the lock; roles and lineage come from the plan."""
    inputs = {input_key(j.id, name, bare_model=False): path for j in jobs for name, path in j.outputs.items()}
    inputs.update({input_key(j.id, BENCHMARK): j.benchmark for j in jobs})
    inputs[LOCK] = f"{pl.build_dir}/{LOCK_FILE}"
    up: dict[str, list[str]] = {}
    for j in jobs:
        up.setdefault(j.config.kind, []).append(j.id)
    stages = pl.spec.stages
    job = _make_job(
        pl,
        sid,
        task,
        {},
        inputs,
        up,
        stages[sid],
        roles=report_roles(stages),
        lineage={
            n: lineage(stages, n) for n in [*pl.spec.models, *stages] if n in pl.spec.models or stages[n].produces_model
        },
    )
    job.ancient = (LOCK,)
    return job


def _make_job(pl: Planner, sid, task, models, inputs, up, st, **facts) -> Job:
    out_dir = f"{pl.run_dir}/{sid}"
    outputs = {n: f"{out_dir}/{o.file}" for n, o in st.outputs.items()}
    for path in outputs.values():  # defence in depth: ids are validated, but never trust a path
        if ".." in PurePosixPath(path).parts or not path.startswith(pl.run_dir + "/"):
            raise SpecError([Problem("output path escapes the run folder", f"stages.{sid}", pl.file, value=path)])
    config = config_class(st.kind)(
        spec_name=pl.spec.name,
        id=sid,
        kind=st.kind,
        seed=st.seed if st.seed is not None else pl.spec.seed,
        spec_seed=pl.spec.seed,
        run_dir=pl.run_dir,
        out_dir=out_dir,
        task=task,
        models=models,
        inputs={k: v.rstrip("/") for k, v in inputs.items()},
        outputs={k: v.rstrip("/") for k, v in outputs.items()},
        # Resources stay out of the stage config (a Snakemake input): they reach the rule through
        # resources.json, so changing mem_mb or runtime_min reruns nothing.
        upstream=up,
        params=st.model_copy(update={"resources": Resources()}),
        **facts,
    )
    return Job(
        config=config,
        inputs=config.inputs,
        outputs=outputs,
        resources=st.resources.resolved(st.default_resources),
        log=f"{pl.run_dir}/logs/{sid}.log",
        benchmark=f"{pl.run_dir}/benchmarks/{sid}.tsv",
        deps=sorted({u for ids in up.values() for u in ids}),
    )
