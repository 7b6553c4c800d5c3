"""Spec -> Plan: resolve references, check the DAG, fix every job's inputs and outputs.

Everything that can be checked before a GPU is spent is checked here, and all
problems are reported together.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path, PurePosixPath

from .engines import check_engine
from .datacheck import check_task
from .errors import Problem, SpecError, available, did_you_mean, short
from .schema import ModelRef, ReportStage, Resources, Spec, StageConfig, TaskSpec
from .sizes import check_sizes
from .yamlload import Positions, dotted

# What each kind writes, relative to its output folder. Trailing "/" = a directory.
OUTPUTS = {
    "generate": {"responses": "responses.jsonl"},
    "sft": {"model": "model/"},
    "pseudo_reward": {"labels": "labels.jsonl", "pairs": "pairs.jsonl", "stats": "stats.json"},
    "reward_model": {"model": "model/", "metrics": "metrics.json", "scores": "scores.jsonl"},
    "rl": {"model": "model/", "log": "rl_log.jsonl"},
    "eval": {"metrics": "metrics.json", "samples": "samples.jsonl"},
    "report": {"html": "report.html", "md": "report.md"},
}
MODEL_KINDS = ("sft", "rl")   # stages whose output is a causal LM

# Per-kind defaults sized for the embedded demo on a laptop; specs override per stage.
DEFAULT_RESOURCES = {
    "generate": Resources(gpus=0, cpus=1, mem_mb=4000, runtime_min=60),
    "sft": Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=120),
    "pseudo_reward": Resources(gpus=0, cpus=1, mem_mb=2000, runtime_min=30),
    "reward_model": Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=120),
    "rl": Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=240),
    "eval": Resources(gpus=0, cpus=1, mem_mb=4000, runtime_min=60),
    "report": Resources(gpus=0, cpus=1, mem_mb=2000, runtime_min=15),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@dataclass
class Job:
    config: StageConfig
    inputs: dict[str, str]
    outputs: dict[str, str]          # directories end with "/"
    resources: Resources
    log: str
    benchmark: str
    deps: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config.id


@dataclass
class Plan:
    spec: Spec
    jobs: list[Job]                  # in topological order, report last
    run_dir: str
    build_dir: str
    resolved: Spec                   # paths made absolute: what the lock file records
    sweep: dict | None = None        # the variants and their stages, when the spec sweeps (compiler/expand.py)

    def job(self, stage_id: str) -> Job:
        return next(j for j in self.jobs if j.id == stage_id)


class _Planner:
    def __init__(self, spec: Spec, positions: Positions, file: str, root: Path, unchecked: frozenset = frozenset()):
        self.spec, self.positions, self.file, self.root = spec, positions, file, root
        self.unchecked = unchecked   # ids of entries that failed validation: references to them are not judged
        self.spec_dir = Path(file).resolve().parent if file else root
        self.problems: list[Problem] = []
        self.run_dir = f"runs/{spec.name}"
        self.build_dir = f"build/{spec.name}"

    # ------------------------------------------------------------------ problems
    def problem(self, path: tuple, message: str, value=None, hint: str = "") -> None:
        whole_entry = len(path) == 2 and path[0] in ("models", "stages")   # point at its id
        line, col = self.positions.key_position(path) if whole_entry else self.positions.find(path)
        self.problems.append(Problem(message, dotted(path), self.file, line, col,
                                     None if value is None else short(value), hint))

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
            self.problem(path, f'"{name}" is {_a(stage.kind)} stage; this needs {_a(" or ".join(kinds))} stage', name,
                         available(fitting) if fitting else f"add {_a(kinds[0])} stage and name it here")
            return None
        return name

    def model_ref(self, path: tuple, name: str) -> ModelRef | None:
        """A reference to a declared model or to a stage that produces one."""
        if name in self.unchecked:
            return None
        if name in self.spec.models:
            m = self.spec.models[name]
            if m.init is not None:
                return ModelRef(name=name, source="init", init=m.init, base=name)
            return ModelRef(name=name, source="path", path=self._model_path(m.path),
                            revision=m.revision, trust_remote_code=m.trust_remote_code, base=name)
        stage = self.spec.stages.get(name)
        if stage is not None and stage.kind in MODEL_KINDS:
            base = self._lineage_base(name, set())
            return ModelRef(name=name, source="stage", path=self.out(name, "model"), base=base or name)
        if stage is not None:
            self.problem(path, f'"{name}" is {_a(stage.kind)} stage, which produces no model', name,
                         "use a model id or an sft/rl stage")
            return None
        choices = list(self.spec.models) + [s for s, v in self.spec.stages.items() if v.kind in MODEL_KINDS]
        self.unknown(path, name, choices, "model or model-producing stage")
        return None

    def _lineage_base(self, name: str, seen: set) -> str | None:
        if name in self.spec.models or name in seen:
            return name if name in self.spec.models else None
        seen.add(name)
        stage = self.spec.stages.get(name)
        parent = getattr(stage, "model", None) or getattr(stage, "policy", None)
        return self._lineage_base(parent, seen) if parent else None

    def _model_path(self, value: str) -> str:
        local = self._local(value)
        return str(local) if local.is_dir() else value

    def check_model_paths(self) -> None:
        """Every declared path, used or not: an existing directory, else something shaped like a hub id."""
        for name, m in self.spec.models.items():
            if m.path is None or self._local(m.path).is_dir():
                continue
            if m.path.startswith((".", "/", "~")) or not HUB_ID.fullmatch(m.path):
                self.problem(("models", name, "path"), f"no local directory {m.path!r}, and not a hub id", m.path,
                             "give an existing directory (relative to the spec's folder), or a hub id such as org/name")

    def _local(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.spec_dir / p)

    def out(self, stage_id: str, name: str) -> str:
        kind = self.spec.stages[stage_id].kind
        return f"{self.run_dir}/{stage_id}/{OUTPUTS[kind][name]}".rstrip("/")

    # ------------------------------------------------------------------ task
    def task(self) -> TaskSpec:
        task = self.spec.task.model_copy(deep=True)
        for split in ("gold", "dev", "distill", "test"):
            src = getattr(task, split)
            if src is not None and src.path is not None:
                local = self._local(src.path).resolve()
                if not local.is_file():
                    self.problem(("task", split, "path"), f"no such data file: {local}", src.path,
                                 "paths are relative to the spec's folder")
                src.path = str(local)
        return task

    def has_gold(self) -> bool:
        t = self.spec.task
        return (t.synthetic is not None and t.synthetic.gold_size > 0) or t.gold is not None

    # ------------------------------------------------------------------ per stage
    def wire(self, sid: str) -> tuple[dict[str, ModelRef], dict[str, list[str]]]:
        """Resolve a stage's references: models by role, upstream stage ids by role."""
        st, p = self.spec.stages[sid], ("stages", sid)
        models: dict[str, ModelRef] = {}
        up: dict[str, list[str]] = {}

        def model(role: str, name: str | None):
            if name is None:
                return
            ref = self.model_ref(p + (role,), name)
            if ref is not None:
                models[role] = ref
                if ref.source == "stage":
                    up.setdefault(role, []).append(name)

        def stage(role: str, name: str, kinds: tuple[str, ...], at: tuple):
            if self.stage_ref(at, name, kinds):
                up.setdefault(role, []).append(name)

        kind = st.kind
        if kind in ("generate", "sft", "eval"):
            model("model", st.model)
        no_test = self.spec.task.synthetic is None and self.spec.task.test is None
        if kind == "generate" and st.split == "test" and no_test:   # test samples: majority-vote accuracy
            self.problem(p + ("split",), "split: test, but the task has no test questions", st.split,
                         "add task.test, or sample split: distill")
        if kind == "eval" and st.hub_task is None and no_test:
            self.problem(p, "eval scores the task's test questions, but the task has none", None,
                         "add task.test (questions with answers), or set hub_task")
        if kind == "sft":
            if st.data == "gold":
                if not self.has_gold():
                    self.problem(p + ("data",), "data: gold needs a gold corpus in the task", st.data,
                                 "set task.gold, or task.synthetic.gold_size > 0")
            else:
                stage("data", st.data, ("pseudo_reward", "generate"), p + ("data",))
            if st.stop_at_dev_accuracy is not None and st.data != "gold":
                self.problem(p + ("stop_at_dev_accuracy",), "stop_at_dev_accuracy reads gold dev answers, so it is "
                             "only allowed when bootstrapping a teacher (data: gold)", st.stop_at_dev_accuracy,
                             "remove it: distillation stages never see gold answers")
        if kind == "pseudo_reward":
            stage("teacher", st.teacher, ("generate",), p + ("teacher",))
            for i, s in enumerate(st.students):
                stage("students", s, ("generate",), p + ("students", i))
            for name in [st.teacher] + st.students:
                g = self.spec.stages.get(name)
                if g is not None and g.kind == "generate" and g.split != "distill":
                    self.problem(p, f'"{name}" samples the {g.split} split; pseudo-labels use distill questions', name,
                                 f"set stages.{name}.split: distill")
        if kind == "reward_model":
            stage("data", st.data, ("pseudo_reward",), p + ("data",))
            if st.score is not None:
                stage("score", st.score, ("generate",), p + ("score",))
            model("model", st.model or self._default_rm_model(sid))
        if kind == "rl":
            model("policy", st.policy)
            if st.reward_model is not None:
                stage("reward_model", st.reward_model, ("reward_model",), p + ("reward_model",))
            if st.votes is not None:
                stage("votes", st.votes, ("pseudo_reward",), p + ("votes",))

        return models, up

    def _default_rm_model(self, sid: str) -> str | None:
        pr = self.spec.stages.get(self.spec.stages[sid].data)
        if pr is None or pr.kind != "pseudo_reward":
            return None
        if not pr.students:
            self.problem(("stages", sid), "reward_model needs `model` when its pseudo_reward stage has no students",
                         None, "set model: to the student's model id")
            return None
        g = self.spec.stages.get(pr.students[0])
        return getattr(g, "model", None)


def build_plan(spec: Spec, positions: Positions | None = None, file: str = "", root: Path | None = None) -> Plan:
    """Check cross-stage rules and produce jobs in run order; raise SpecError on problems."""
    if spec.sweep:
        from .expand import expand
        return expand(spec, positions or Positions(), file, root or Path.cwd())
    pl = _Planner(spec, positions or Positions(), file, root or Path.cwd())
    task, wired, order = _check(pl)
    if pl.problems:
        raise SpecError(pl.problems)
    spec, stages = pl.spec, pl.spec.stages
    jobs = [_job(pl, sid, task, *wired[sid]) for sid in order]
    report_id = next(s for s, v in stages.items() if v.kind == "report")
    jobs.append(_report_job(pl, report_id, task, jobs))
    return Plan(spec=spec, jobs=jobs, run_dir=pl.run_dir, build_dir=pl.build_dir, resolved=_resolved(pl, task))


def _resolved(pl: _Planner, task: TaskSpec) -> Spec:
    """The spec with data and model paths made absolute: the lock holds it, and it rebuilds
    the same workflow from anywhere (`distillc build build/<name>/spec.lock.json`)."""
    models = {name: m.model_copy(update={"path": pl._model_path(m.path)}) if m.path else m
              for name, m in pl.spec.models.items()}
    return pl.spec.model_copy(update={"task": task, "models": models})


def check_references(spec: Spec, positions: Positions, file: str, unchecked: frozenset) -> list[Problem]:
    """The cross-stage checks alone, for a spec whose broken entries (`unchecked`) were left out."""
    pl = _Planner(spec, positions, file, Path.cwd(), unchecked)
    _check(pl)
    return pl.problems


def _check(pl: _Planner) -> tuple[TaskSpec, dict, list[str]]:
    """Every cross-stage rule; problems collect on the planner. Adds the implicit report stage."""
    spec = pl.spec
    stages = dict(spec.stages)
    reports = [s for s, v in stages.items() if v.kind == "report"]
    if len(reports) > 1:
        pl.problem(("stages", reports[1]), "only one report stage is allowed", reports[1], f'keep "{reports[0]}"')
    if not reports and ("report" in stages or "report" in spec.models):
        pl.problem(("stages" if "report" in stages else "models", "report"),
                   'there is no report stage, and the id "report" is taken, so none can be added',
                   "report", "add a stage with `kind: report` under another id")
    elif not reports:
        stages["report"] = ReportStage(kind="report")   # every workflow ends in a report
        pl.spec = spec.model_copy(update={"stages": stages})
    for name in sorted(set(spec.models) & set(spec.stages)):
        pl.problem(("stages", name), f'"{name}" is both a model id and a stage id', name, "rename one of them")
    pl.check_model_paths()
    task = pl.task()
    wired = {sid: pl.wire(sid) for sid in stages if stages[sid].kind != "report"}
    for sid, st in stages.items():
        check_engine(pl, sid, DEFAULT_RESOURCES[st.kind].gpus)
    _check_data(pl, task, wired)
    return task, wired, _order(pl, wired)


def _check_data(pl: _Planner, task: TaskSpec, wired: dict) -> None:
    """Every row of the local data files, then sizes against the models (compiler/datacheck.py, sizes.py)."""
    problems, sizes = check_task(task, pl.spec.seed)
    for p in problems:
        if p.file:
            pl.problems.append(p)
        else:    # the synthetic task: a problem of the spec itself
            pl.problem(tuple(p.field.split(".")), p.message, hint=p.hint)
    check_sizes(pl, wired, sizes)


def _a(word: str) -> str:
    """The article as the word is said: "an eval", "an sft", "a generate"."""
    return ("an " if word.startswith(("a", "e", "i", "o", "u", "sft", "rl")) else "a ") + word


def _order(pl: _Planner, wired: dict) -> list[str]:
    graph = {sid: {u for ids in up.values() for u in ids} for sid, (_, up) in wired.items()}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        pl.problem(("stages", cycle[0]), "stages form a cycle: " + " -> ".join(reversed(cycle)), cycle[0],
                   "a stage cannot read (directly or indirectly) its own output")
        return []


def _job(pl: _Planner, sid: str, task: TaskSpec, models: dict, up: dict) -> Job:
    spec, st = pl.spec, pl.spec.stages[sid]
    inputs = {}
    for role, ids in up.items():
        for i, u in enumerate(ids):
            key = role if len(ids) == 1 and role != "students" else f"{role}_{i}"
            for name in OUTPUTS[spec.stages[u].kind]:
                if name in ("model", "responses", "labels", "pairs"):
                    inputs[key if name == "model" else f"{key}_{name}"] = pl.out(u, name)
    if st.kind == "eval" and st.hub_task is None:   # the local lm-eval task the renderer writes
        inputs["lm_eval_task"] = f"{pl.build_dir}/lm_eval/{sid}/{lm_eval_task_name(spec.name, sid)}.yaml"
    return _make_job(pl, sid, task, models, inputs, up, st)


def lm_eval_task_name(spec_name: str, stage_id: str) -> str:
    return f"distillc_{spec_name}_{stage_id}"


def _report_job(pl: _Planner, sid: str, task: TaskSpec, jobs: list[Job]) -> Job:
    inputs = {f"{j.id}_{name}": path for j in jobs for name, path in j.outputs.items()}
    inputs.update({f"{j.id}_benchmark": j.benchmark for j in jobs})
    up: dict[str, list[str]] = {}
    for j in jobs:
        up.setdefault(j.config.kind, []).append(j.id)
    return _make_job(pl, sid, task, {}, inputs, up, pl.spec.stages[sid])


def _make_job(pl: _Planner, sid, task, models, inputs, up, st) -> Job:
    out_dir = f"{pl.run_dir}/{sid}"
    outputs = {n: f"{out_dir}/{rel}" for n, rel in OUTPUTS[st.kind].items()}
    for path in outputs.values():   # defence in depth: ids are validated, but never trust a path
        if ".." in PurePosixPath(path).parts or not path.startswith(pl.run_dir + "/"):
            raise SpecError([Problem("output path escapes the run folder", f"stages.{sid}", pl.file, value=path)])
    config = StageConfig(
        spec_name=pl.spec.name, id=sid, kind=st.kind,
        seed=st.seed if st.seed is not None else pl.spec.seed, spec_seed=pl.spec.seed,
        run_dir=pl.run_dir, out_dir=out_dir, task=task, models=models,
        inputs={k: v.rstrip("/") for k, v in inputs.items()},
        outputs={k: v.rstrip("/") for k, v in outputs.items()},
        # Resources stay out of the stage config (a Snakemake input): they reach the rule through
        # resources.json, so changing mem_mb or runtime_min reruns nothing.
        upstream=up, params=st.model_dump(mode="json", exclude={"resources"}),
    )
    defaults = DEFAULT_RESOURCES[st.kind].model_dump()
    given = {k: v for k, v in st.resources.model_dump().items() if v is not None}
    return Job(config=config, inputs=config.inputs, outputs=outputs, resources=Resources(**{**defaults, **given}),
               log=f"{pl.run_dir}/logs/{sid}.log", benchmark=f"{pl.run_dir}/benchmarks/{sid}.tsv",
               deps=sorted({u for ids in up.values() for u in ids}))
