"""Cluster execution: profiles/slurm drives a real one-node SLURM cluster (tests/slurm/start.sh).

The first test needs no cluster: it feeds the resources the compiler renders to the slurm
plugin's own sbatch-line builder. The others start slurmctld/slurmd on localhost (root and
apt-get, or SLURM already installed; otherwise they skip) and run Snakemake through the
profile as shipped, with only the status polling made faster. Every Snakemake run has a
timeout and is killed with SIGKILL on expiry: a confused slurm executor ignores SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO, STARTED_MARK, build_spec, synthetic_task

# The executor plugin is the `slurm` extra (scripts/test.sh installs it): without it there is no
# profiles/slurm to test.
pytest.importorskip("snakemake_executor_plugin_slurm", reason="needs the slurm extra: pip install -e '.[slurm]'")

PROFILE = REPO / "profiles" / "slurm"
SCRIPTS = REPO / "tests" / "slurm"
BIN = Path(sys.executable).parent
# Poll from 5 s instead of the profile's 20 s. The plugin adds 10 s to the interval at each poll
# that finds no finished job (5, 15, 25 s...), and a test job takes 10-15 s (two Snakemake starts).
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "5"]


# ------------------------------------------------------------------ resources -> sbatch (no cluster)
class _Resources(dict):
    """What the plugin reads from job.resources: .get() and attribute access."""

    __getattr__ = dict.__getitem__


def sbatch_line(entry: dict) -> str:
    """The sbatch command line the slurm plugin builds for one resources.json entry."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=_Resources(entry["resources"]), threads=entry["threads"])
    params = {
        "run_uuid": "uuid",
        "slurm_logfile": "x.log",
        "comment_str": "rule_x",
        "account": "",
        "partition": "",
        "workdir": "/w",
    }
    return get_submit_command(job, params) + set_gres_string(job)


@pytest.mark.slow
def test_rendered_resources_become_the_right_sbatch_flags(tmp_path):
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    spec["stages"]["student_sft"]["resources"] = {
        "gpus": 2,
        "cpus": 8,
        "mem_mb": 16000,
        "runtime_min": 90,
        "partition": "gpu-a100",
        "account": "proj1",
        "constraint": "a100",
    }
    spec["stages"]["rm"]["resources"] = {"gpus": 1, "cpus": 2}
    build_spec(spec, tmp_path)
    jobs = json.loads((tmp_path / "build/tiny/resources.json").read_text())

    multi = jobs["student_sft"]
    line = sbatch_line(multi)
    for flag in ("--gpus=2", "--nodes=1", "--cpus-per-task=8", "--mem 16000", "-t 90", "-C a100"):
        assert f" {flag}" in line, (flag, line)
    # Partition and account go through the executor's checks, under the plugin's names.
    assert multi["resources"]["slurm_partition"] == "gpu-a100"
    assert multi["resources"]["slurm_account"] == "proj1"
    assert "--gpus=1" in sbatch_line(jobs["rm"])
    cpu_line = sbatch_line(jobs["eval_rl"])
    assert "--gpus" not in cpu_line and "--ntasks=1" in cpu_line and "--cpus-per-task=1" in cpu_line

    # More than one GPU: the stage runs under accelerate, which must parse the rendered line.
    from accelerate.commands.launch import launch_command_parser

    assert jobs["rm"]["launch"] == "-m"
    launch = multi["launch"].split()
    assert launch[:2] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(launch[2:] + ["runtime.sft", "--config", "c.yaml", "--threads", "8"])
    assert (args.num_processes, args.module, args.training_script) == (2, True, "runtime.sft")
    assert args.training_script_args == ["--config", "c.yaml", "--threads", "8"]


# ------------------------------------------------------------------ a one-node cluster
@pytest.fixture(scope="module")
def cluster():
    """Start the test cluster unless one already runs; one we started stops when the whole run ends.

    Not at this module's end: once SLURM's client tools are installed, every Snakemake start
    imports the slurm executor plugin, which runs `scontrol show config`; against a stopped
    controller that retries for 10 s. Stopped mid-run, it added 10 s to every later Snakemake
    call of the suite (test_render + test_sweep: 136 s instead of 64 s). conftest's
    pytest_sessionfinish stops it, in the process that ran the session (xdist's controller).
    """
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root: tests/slurm/start.sh installs and starts daemons")
    already = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPTS / "start.sh")], capture_output=True, text=True, timeout=600)
    if proc.returncode == 2:
        pytest.skip(f"no SLURM cluster here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"SLURM daemons did not come up:\n{proc.stderr}"
    print(f"cluster up in {time.monotonic() - start:.1f}s: {proc.stderr.strip()}")
    if not already:
        STARTED_MARK.touch()
    yield


def snakemake(workdir: Path, *args: str, timeout: float) -> tuple[int, str, float]:
    """Run snakemake with the slurm profile; (exit code, output, seconds). Never hangs."""
    cmd = [str(BIN / "snakemake"), "--profile", str(PROFILE), *FAST_POLL, *args]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        for run_id in run_ids(out):
            subprocess.run(["scancel", "--name", run_id], capture_output=True, timeout=30)
        subprocess.run([str(BIN / "snakemake"), "--unlock"], cwd=workdir, capture_output=True, timeout=120)
        pytest.fail(f"snakemake still running after {timeout}s (killed); last output:\n{out[-4000:]}")
    return proc.returncode, out, time.monotonic() - start


def run_ids(output: str) -> list[str]:
    return re.findall(r"SLURM run ID: (\S+)", output)


def slurm_jobs(output: str) -> list[dict]:
    """The SLURM jobs of one snakemake run, from squeue (it keeps finished jobs for MinJobAge)."""
    (run_id,) = run_ids(output)
    fields = ("id", "comment", "state", "mem", "cpus", "limit")
    text = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%k|%T|%m|%C|%l"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in text.splitlines() if line.strip()]


def write_workflow(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Snakefile").write_text(text)
    return root


PAIR = '''
rule all:
    input: "a.txt", "b.txt"
rule a:
    output: "a.txt"
    shell: "echo a > {output}"
rule b:
    output: "b.txt"
    resources: mem_mb=700, runtime=7
    shell: "echo b > {output}; echo $SLURM_JOB_ID >> {output}"
'''


@pytest.mark.slow
def test_each_rule_runs_as_its_own_slurm_job(cluster, tmp_path):
    root = write_workflow(tmp_path / "pair", PAIR)
    code, out, seconds = snakemake(root, "--slurm-keep-successful-logs", timeout=150)
    print(f"2-job workflow through SLURM: {seconds:.1f}s")
    assert code == 0, out[-4000:]

    listed = slurm_jobs(out)
    assert sorted(j["comment"] for j in listed) == ["rule_a", "rule_b"], listed  # one job per rule
    assert {j["state"] for j in listed} == {"COMPLETED"}, listed
    jobs = {j["comment"]: j for j in listed}
    a, b = jobs["rule_a"], jobs["rule_b"]
    assert (b["mem"], b["cpus"], b["limit"]) == ("700M", "1", "7:00")  # the rule's resources
    assert (a["mem"], a["limit"]) == ("2000M", "30:00")  # the profile's defaults
    assert (root / "b.txt").read_text().split() == ["b", b["id"]]  # it ran inside job b
    for job in jobs.values():
        assert (root / f".snakemake/slurm_logs/{job['comment']}/{job['id']}.log").exists()


FAILING = '''
rule all:
    input: "never.txt"
rule broken_stage:
    output: "never.txt"
    log: "logs/broken_stage.log"
    shell: "(echo 'stage says: boom' >&2; exit 1) 2> {log}"
'''


@pytest.mark.slow
def test_a_failing_job_fails_the_workflow_with_its_rule_and_log(cluster, tmp_path):
    root = write_workflow(tmp_path / "failing", FAILING)
    code, out, seconds = snakemake(root, timeout=240)
    print(f"failing job (with the profile's one retry) reported in {seconds:.1f}s")
    assert code != 0
    assert "Error in rule broken_stage" in out and "SLURM status is: 'FAILED'" in out, out[-4000:]
    assert "stage says: boom" in out  # show-failed-logs prints the stage's own log
    assert not (root / "never.txt").exists()
    jobs = slurm_jobs(out)  # restart-times: 1 -> a second, separate attempt
    assert [j["comment"] for j in jobs] == ["rule_broken_stage"] * 2 and {j["state"] for j in jobs} == {"FAILED"}


HANGING = '''
rule all:
    input: "never.txt"
rule hung_stage:
    output: "never.txt"
    resources: runtime=1
    shell: "sleep 600; touch {output}"
'''


@pytest.mark.slow
def test_a_job_past_its_runtime_is_killed_and_fails_the_workflow(cluster, tmp_path):
    root = write_workflow(tmp_path / "hanging", HANGING)
    code, out, seconds = snakemake(root, "--restart-times", "0", timeout=280)
    print(f"1-minute runtime limit: workflow failed after {seconds:.1f}s")
    assert code != 0
    assert "Error in rule hung_stage" in out and "SLURM status is: 'TIMEOUT'" in out, out[-4000:]
    assert [j["state"] for j in slurm_jobs(out)] == ["TIMEOUT"]


@pytest.mark.slow
def test_tiny_pipeline_runs_to_the_report_one_slurm_job_per_stage(cluster, tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    subprocess.run(
        [str(BIN / "distillc"), "build", str(REPO / "specs" / "tiny.yaml"), "--root", str(root)],
        check=True,
        cwd=root,
        capture_output=True,
        text=True,
    )
    stages = set(json.loads((root / "build/tiny/resources.json").read_text()))
    code, out, seconds = snakemake(root, timeout=1800)
    print(f"specs/tiny.yaml through SLURM: {seconds:.1f}s")
    if code:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (root / "runs/tiny/logs").glob("*.log"))
        pytest.fail(f"snakemake failed:\n{out[-4000:]}\n{logs}")

    jobs = slurm_jobs(out)
    assert sorted(j["comment"] for j in jobs) == sorted(f"rule_{s}" for s in stages), jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    assert (root / "runs/tiny/report/report.html").stat().st_size > 0
    for stage in stages:  # each job wrote its Snakemake benchmark and its stage log
        assert (root / f"runs/tiny/benchmarks/{stage}.tsv").exists(), stage
        assert (root / f"runs/tiny/logs/{stage}.log").exists(), stage


SHARDED = {
    "name": "sh",
    "seed": 0,
    "task": synthetic_task(),
    "models": {"m": {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}},
    "stages": {
        "samples": {
            "kind": "generate",
            "model": "m",
            "temperatures": [0.0, 1.0],
            "samples_per_temperature": 2,
            "max_new_tokens": 10,
            "batch_size": 8,
            "shards": 2,
        },  # fmt: skip
    },
}


@pytest.mark.slow
def test_a_sharded_generate_runs_as_separate_slurm_jobs_and_joins_to_one_jobs_bytes(cluster, tmp_path):
    """shards: 2 -> two SLURM jobs (one per shard, 2 of the 4 batches each) and a join job; the joined
    responses are the bytes the same stage writes as one job (run here, locally)."""
    root = tmp_path / "sharded"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "spec.yaml").write_text(yaml.safe_dump(SHARDED, sort_keys=False))
    distillc = [str(BIN / "distillc"), "build", "spec.yaml"]
    subprocess.run(distillc, check=True, cwd=root, capture_output=True, text=True)
    target = "runs/sh/samples/responses.jsonl"
    code, out, seconds = snakemake(root, "--slurm-keep-successful-logs", target, timeout=300)
    print(f"a generate stage in 2 shards + a join through SLURM: {seconds:.1f}s")
    assert code == 0, out[-4000:]

    jobs = slurm_jobs(out)
    names = ["rule_samples_shard1of2", "rule_samples_shard2of2", "rule_samples"]
    assert sorted(j["comment"] for j in jobs) == sorted(names), jobs
    assert len({j["id"] for j in jobs}) == 3 and {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    for job in jobs:  # each ran inside its own SLURM job
        assert (root / f".snakemake/slurm_logs/{job['comment']}/{job['id']}.log").exists()
    for k in (1, 2):
        shard = (root / f"runs/sh/samples/shards/{k}of2/responses.jsonl").read_text().splitlines()
        assert len(shard) == 16 * 3, k  # 2 batches of 8 questions, 3 samples each

    one = tmp_path / "one"
    one.mkdir()
    (one / "spec.yaml").write_text(yaml.safe_dump(SHARDED, sort_keys=False).replace("shards: 2", "shards: 1"))
    subprocess.run(distillc, check=True, cwd=one, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stage = [sys.executable, "-m", "runtime.generate", "--config", "build/sh/stages/samples.yaml", "--threads", "1"]
    subprocess.run(stage, check=True, cwd=one, env=env, capture_output=True, text=True)
    assert (root / target).read_bytes() == (one / target).read_bytes()
