"""A sharded stage's Snakemake jobs: N shard jobs and the join (compiler/spec/shards.py says why).

The plan keeps one job per stage (what the report, the lock, sweeps and `distillc plan` count); the
renderer asks `workflow_jobs` for the jobs Snakemake runs. A stage with `shards: 1` is its own job, so
its rule and stage config are what they were before shards existed. A sharded stage becomes:
- shard k of N: the stage's config with `shard: {index: k, count: N}` and its own folder
  (runs/<spec>/<id>/shards/<k>of<N>/) for outputs, progress and resume files; the stage's resources.
- the join: the stage's config with every shard's outputs (and benchmark) as inputs; it writes the stage's
  declared outputs where downstream stages read them, and the stage's benchmark file (the shards' summed),
  so the report times the stage's sampling, not the join. It needs no GPU.
"""

from __future__ import annotations

from ..spec.shards import SHARD_INPUT, Shard, shard_dir, shard_name
from ..spec.stagekind import BENCHMARK, Resources, input_key
from .planner import Job, Plan


def workflow_jobs(plan: Plan) -> list[Job]:
    """Every Snakemake job of the plan, in run order: a sharded stage's shards come before its join."""
    out: list[Job] = []
    for job in plan.jobs:
        if job.config.params.shard_count() > 1:
            shards = shard_jobs(job)
            out += [*shards, join_job(job, shards)]
        else:
            out.append(job)
    return out


def shard_jobs(job: Job) -> list[Job]:
    """The stage's N shard jobs: its inputs and resources, each its own part, folder, log and benchmark."""
    cfg, count = job.config, job.config.params.shard_count()
    jobs = []
    for index in range(1, count + 1):
        name, folder = shard_name(job.id, index, count), shard_dir(cfg.out_dir, index, count)
        outputs = {out: folder + path.removeprefix(cfg.out_dir) for out, path in job.outputs.items()}
        config = cfg.model_copy(
            update={
                "shard": Shard(index=index, count=count),
                "out_dir": folder,
                "outputs": {out: path.rstrip("/") for out, path in outputs.items()},
            }
        )
        jobs.append(
            Job(
                config=config,
                inputs=config.inputs,
                outputs=outputs,
                resources=job.resources,
                log=f"{cfg.run_dir}/logs/{name}.log",
                benchmark=f"{cfg.run_dir}/benchmarks/{name}.tsv",
                deps=job.deps,
                name=name,
            )
        )
    return jobs


def join_job(job: Job, shards: list[Job]) -> Job:
    """The join: reads every shard's outputs, writes the stage's outputs and its benchmark file."""
    inputs = dict(job.inputs)
    for index, shard in enumerate(shards, 1):
        for out, path in shard.outputs.items():
            inputs[input_key(SHARD_INPUT, out, index)] = path.rstrip("/")
        inputs[input_key(SHARD_INPUT, BENCHMARK, index)] = shard.benchmark
    outputs = {**job.outputs, BENCHMARK: job.benchmark}
    config = job.config.model_copy(
        update={"inputs": inputs, "outputs": {out: path.rstrip("/") for out, path in outputs.items()}}
    )
    r = job.resources  # on the stage's partition and account, without its GPUs: joining reads files
    return Job(
        config=config,
        inputs=config.inputs,
        outputs=outputs,
        resources=Resources(
            gpus=0, cpus=1, mem_mb=r.mem_mb, runtime_min=r.runtime_min, partition=r.partition, account=r.account
        ),
        log=job.log,
        benchmark=f"{job.config.run_dir}/benchmarks/{job.id}.join.tsv",
        deps=job.deps,
    )
