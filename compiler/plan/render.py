"""Plan -> build/<spec>/: the workflow, one config per stage, resources, lm-eval tasks, lock.

Files are written only when their content changes, so rebuilding an unchanged
spec touches nothing and Snakemake reruns nothing; a changed field changes one
stage config, and Snakemake reruns that stage and what depends on it.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path, PurePosixPath

import jinja2
import yaml

from ..spec import lm_eval_filters
from ..spec.decoding import stop_strings
from ..spec.files import atomic_write_text
from ..spec.layout import LOCK_FILE, RESOURCES_FILE, TRACKING_FILE
from ..spec.stages import EvalStage, lm_eval_task_name
from .planner import Job, Plan
from .shards import workflow_jobs

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("compiler", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
LM_EVAL_ANSWERS = "distillc_answers.py"  # beside each local lm-eval task; its YAML loads it by this name
LOCKED_PACKAGES = (
    "distillc",
    "pydantic",
    "pyyaml",
    "jinja2",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "torch",
    "transformers",
    "trl",
    "lm-eval",
    "datasets",
    "accelerate",
    "peft",
    "tokenizers",
)


def render(plan: Plan, root: Path) -> dict[str, bool]:
    """Write the build; return {relative path: changed?} for every file it owns."""
    build = root / plan.build_dir
    files = build_files(plan, root)
    changed = {f"{plan.build_dir}/{rel}": write_if_changed(build / rel, text) for rel, text in files.items()}
    _remove_stale(build, set(files))
    changed["build/LATEST"] = write_if_changed(root / "build" / "LATEST", plan.spec.name + "\n")
    return changed


def build_files(plan: Plan, root: Path) -> dict[str, str]:
    """Every file of build/<spec>/ (path relative to it -> text); `distillc plan` renders the same."""
    files: dict[str, str] = {}
    jobs = workflow_jobs(plan)  # a sharded stage: its shard jobs and its join
    for job in jobs:
        files[f"stages/{job.rule}.yaml"] = _stage_yaml(job)
    for job in plan.jobs:
        if "lm_eval_task" in job.inputs:  # a stage that declares it reads a local lm-eval task
            task_file = job.inputs["lm_eval_task"].removeprefix(plan.build_dir + "/")
            files[task_file] = _lm_eval_task(plan, job, root)
            # the task's `!function` scoring: imports runtime.lib.answers, the pipeline's own answer code
            files[str(PurePosixPath(task_file).parent / LM_EVAL_ANSWERS)] = TEMPLATES.get_template(
                f"{LM_EVAL_ANSWERS}.j2"
            ).render()
    files["env.yaml"] = _conda_env()
    priority = _priorities(plan)
    files[RESOURCES_FILE] = (
        json.dumps(
            {j.rule: {**_job_resources(j), "priority": priority[j.rule]} for j in jobs}, indent=2, sort_keys=True
        )
        + "\n"
    )
    # Every stage's outputs are targets: a deleted one (say a model dir) is rebuilt by a plain run,
    # where Snakemake would otherwise skip a missing intermediate file whose consumers are up to date.
    files["workflow.smk"] = TEMPLATES.get_template("workflow.smk.j2").render(
        jobs=jobs,
        build_dir=plan.build_dir,
        spec_name=plan.spec.name,
        targets=[p.rstrip("/") for j in plan.jobs for p in j.outputs.values()],
    )
    files[LOCK_FILE] = lock_text(plan)
    # read by the training stages (runtime/lib/tracking.py), but no rule's input: changing it reruns nothing
    files[TRACKING_FILE] = json.dumps(plan.spec.tracking.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return files


def _stage_yaml(job: Job) -> str:
    data = job.config.model_dump(mode="json", exclude_none=False, exclude={"params": {"resources"}})
    return "# Resolved stage config, written by distillc. Read with compiler.contract.StageConfig.\n" + yaml.safe_dump(
        data, sort_keys=True, allow_unicode=True, width=100
    )


def _conda_env() -> str:
    """The software every rule runs with, for `snakemake --use-conda` (and --lint): this checkout.

    It lives in the build (rules name it relative to workflow.smk), so a build made in any
    root finds it; without --use-conda, rules run in snakemake's own environment.
    """
    project = Path(__file__).resolve().parents[2]
    return TEMPLATES.get_template("env.yaml.j2").render(project=str(project))


def _job_resources(job: Job) -> dict:
    """Snakemake resources (names the slurm executor understands) and the launcher."""
    r = job.resources
    res = {"mem_mb": r.mem_mb, "runtime": r.runtime_min, "cpus_per_task": r.cpus, "gpus": r.gpus}
    if r.gpus:
        # sbatch --gpus=N may spread N GPUs over several nodes; the launcher needs them on one.
        res.update(gpu=r.gpus, nodes=1)
    for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"), ("constraint", "constraint")):
        if getattr(r, key):
            res[name] = getattr(r, key)
    return {"threads": r.cpus, "resources": res, "launch": _launch(job)}


def _launch(job: Job) -> str:
    """What runs the stage program (`{python} {launch} runtime.<kind> ...`): `-m`, one process; a training
    stage in several: accelerate's launcher on GPUs (one process per GPU), else the CPU launcher
    (runtime/lib/launch.py, which splits the stage's threads among its processes)."""
    r, trains = job.resources, job.config.params.trains
    if trains and (r.gpus or 0) > 1:
        return f"-m accelerate.commands.launch --multi_gpu --num_processes {r.gpus} -m"
    if trains and not r.gpus and (r.processes or 1) > 1:
        return f"-m runtime.lib.launch --processes {r.processes}"
    return "-m"


def _priorities(plan: Plan) -> dict[str, int]:
    """Each job's Snakemake priority: the number of jobs on its longest path to the end of the DAG.

    When fewer cores than ready jobs are free, Snakemake starts the highest priority
    first; left to itself it ran rl rungs and evals before the reward model that the
    longest chain waits on (rm -> student_rl -> eval), and the demo ended on one busy
    core for two minutes. Starting the longest chain first is the classic critical-path
    rule; it changes the order of jobs only, never what one computes.
    """
    below: dict[str, list[str]] = {j.id: [] for j in plan.jobs}
    for job in plan.jobs:
        for up in job.deps:
            below[up].append(job.id)
    depth: dict[str, int] = {}
    for job in reversed(plan.jobs):  # topological order: every job after the jobs it reads
        depth[job.id] = 1 + max((depth[d] for d in below[job.id]), default=0)
    shards = {j.rule: depth[j.id] + 1 for j in workflow_jobs(plan) if j.config.shard}  # above their join
    return depth | shards


def _lm_eval_task(plan: Plan, job: Job, root: Path) -> str:
    """A local lm-eval task over the questions file the eval stage writes (absolute path)."""
    p = job.config.params
    assert isinstance(p, EvalStage), "lm-eval tasks are rendered for eval stages"
    data = (root / job.config.out_dir / "questions.jsonl").resolve()
    return TEMPLATES.get_template("lm_eval_task.yaml.j2").render(
        task=lm_eval_task_name(plan.spec.name, job.id),
        data_file=str(data),
        repeats=p.samples,
        sampled=p.samples > 1 or p.temperature > 0,
        temperature=p.temperature or 1.0,
        max_new_tokens=p.max_new_tokens,
        format=plan.spec.task.format,
        until=stop_strings(plan.spec.task.format),
        filters=lm_eval_filters.NAMES,
    )


def lock_text(plan: Plan) -> str:
    resolved = plan.resolved.model_dump(mode="json")
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    lock = {
        "spec_hash": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
        "spec": resolved,
        "packages": {name: _version(name) for name in LOCKED_PACKAGES},
        "stages": {j.id: j.config.kind for j in plan.jobs},
    }
    if plan.sweep:  # the report reads the variants, and the expanded stages' wiring, from here
        lock["sweep"] = plan.sweep
        lock["expanded"] = plan.spec.model_dump(mode="json")
    return json.dumps(lock, indent=2) + "\n"  # spec order kept: it fixes the run order


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_if_changed(path: Path, text: str) -> bool:
    """Atomic write, skipped when the content is already there (keeps mtime)."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def _remove_stale(build: Path, keep: set[str]) -> None:
    """Drop configs of stages that left the spec, so the build mirrors the spec."""
    for sub in ("stages", "lm_eval"):
        for f in (build / sub).rglob("*") if (build / sub).exists() else []:
            if f.is_file() and str(f.relative_to(build)) not in keep:
                f.unlink()
