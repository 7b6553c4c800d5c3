"""`distillc plan` says what `snakemake` will run; `distillc run` survives a kill -9 with no manual step.

Real CLI, real Snakemake, specs/tiny.yaml; the stage commands are stand-ins (tests/fake_stages.py)
that write their outputs in a blink, since what is tested here is the workflow around them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fake_stages import fake_stages

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

BIN = Path(sys.executable).parent
# at least these follow student_sft in specs/tiny.yaml (after() reads the whole set from the build)
SFT_AND_AFTER = {
    "student_sft",
    "sft_samples",
    "eval_sft",
    "rewards",
    "rm",
    "student_rl",
    "eval_rl",
    "report",
    "sft_test_samples",
    "student_rl_majority",
    "student_rl_gold",
    "eval_rl_majority",
    "eval_rl_gold",
}


def after(root: Path, *ids: str) -> set[str]:
    """`ids` and every stage that reads their outputs, directly or not, from the built stage configs."""
    configs = [yaml.safe_load(p.read_text()) for p in (root / "build" / "tiny" / "stages").glob("*.yaml")]
    reads = {c["id"]: {u for ups in c["upstream"].values() for u in ups} for c in configs}
    found = set(ids)
    while more := {sid for sid, ups in reads.items() if ups & found} - found:
        found |= more
    return found


def sh(root: Path, env: dict, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def dry_run(root: Path, env: dict, *flags: str) -> set[str]:
    """The stages a plain `snakemake` would run now, from its own dry run."""
    proc = sh(root, env, str(BIN / "snakemake"), "--dry-run", *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(re.findall(r"^rule (\w+):$", proc.stdout + proc.stderr, re.M)) - {"all"}


def plan(root: Path, env: dict) -> dict[str, str]:
    """Stage id -> reason, for the stages `distillc plan` says would run."""
    proc = sh(root, env, str(BIN / "distillc"), "plan", "tiny.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(re.findall(r"^  (\w+) +\w+ +<- .*? RUN  \((.*)\)$", proc.stdout, re.M))


def build(root: Path, env: dict) -> None:
    proc = sh(root, env, str(BIN / "distillc"), "build", "tiny.yaml")
    assert proc.returncode == 0, proc.stderr


def run(root: Path, env: dict) -> subprocess.CompletedProcess:
    return sh(root, env, str(BIN / "distillc"), "run", "--cores", "2", timeout=600)


def edit(spec: Path, old: str, new: str) -> None:
    text = spec.read_text()
    assert old in text, old
    spec.write_text(text.replace(old, new, 1))


@pytest.fixture
def workflow(tmp_path) -> tuple[Path, dict]:
    """A workflow root with specs/tiny.yaml built in it, and the environment that fakes the stages."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copy(REPO / "specs" / "tiny.yaml", root / "tiny.yaml")
    env = fake_stages(tmp_path / "fake")
    build(root, env)
    return root, env


def test_plan_lists_what_snakemake_runs_after_each_kind_of_change(workflow):
    root, env = workflow
    spec, everything = root / "tiny.yaml", set(plan(root, env))
    stages = {p.stem for p in (root / "build" / "tiny" / "stages").glob("*.yaml")}
    declared = yaml.safe_load(spec.read_text())["stages"]  # every stage the spec declares (its report included)
    assert everything == stages == set(declared) and dry_run(root, env) == everything
    assert run(root, env).returncode == 0

    sft_and_after = after(root, "student_sft")
    assert SFT_AND_AFTER <= sft_and_after
    cases = []

    def check(change: str, rebuild: bool, expected: set[str]) -> dict[str, str]:
        if rebuild:
            before = set(plan(root, env))  # before the build: what build + run would do
            build(root, env)
        planned = plan(root, env)
        assert set(planned) == dry_run(root, env) == expected, change
        assert not rebuild or before == expected, change
        cases.append(change)
        return planned

    check("nothing", False, set())
    edit(
        spec,
        "teacher_votes, epochs: 25",
        "teacher_votes, resources: {mem_mb: 999, runtime_min: 7, cpus: 2}, epochs: 25",
    )
    check("resources only", True, set())
    edit(spec, "epochs: 25", "epochs: 26")
    check("a parameter of student_sft", True, sft_and_after)
    edit(spec, "epochs: 26", "epochs: 25")
    check("its revert", True, set())

    shutil.rmtree(root / "runs/tiny/student_sft/model")
    planned = check("a deleted model dir", False, sft_and_after)
    assert planned["student_sft"] == "Missing output files: student_sft/model"
    assert run(root, env).returncode == 0 and (root / "runs/tiny/student_sft/model/weights.txt").exists()
    check("after the run that rebuilt it", False, set())

    # A corrupted intermediate file: its producer is not rerun (its output exists); Snakemake
    # reruns every stage that reads it, and plan says the same.
    (root / "runs/tiny/teacher_samples/responses.jsonl").write_text("{not json\n")
    readers = after(root, "teacher_samples") - {"teacher_samples"}  # its producer is not rerun
    assert {"teacher_votes"} | SFT_AND_AFTER <= readers
    planned = check("a corrupted responses.jsonl", False, readers)
    assert planned["teacher_votes"] == "Updated input files: teacher_samples/responses.jsonl"
    assert len(cases) == 7


def test_a_killed_run_finishes_with_the_same_command_and_runs_never_overlap(workflow):
    root, env = workflow
    (root / "hold").write_text("student_sft\n")  # the stand-in sft stage waits while this exists
    first = subprocess.Popen(
        [str(BIN / "distillc"), "run", "--cores", "2"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (root / "held").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the run never reached student_sft"
            time.sleep(0.2)
        second = run(root, env)  # a second run while the first is alive
        assert second.returncode == 2 and "another run is in progress" in second.stderr, second.stderr
        assert f"(pid {first.pid})" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9 the whole run, mid-stage
        first.wait()
    assert list((root / ".snakemake/locks").iterdir()), "Snakemake's lock should outlive the kill"
    assert "student_sft" in plan(root, env)  # left incomplete: plan says it reruns
    (root / "hold").unlink()

    again = run(root, env)  # the same command, no --unlock, no --rerun-incomplete
    assert again.returncode == 0, again.stderr[-3000:]
    assert (root / "runs/tiny/report/report.md").exists()
    assert dry_run(root, env) == set() and plan(root, env) == {}


def test_the_longest_chain_starts_first(workflow):
    """With one core free and several stages ready, Snakemake starts the one on the longest path to the
    end (render.py's priorities): the reward model before the rl rungs and evals that do not wait on it,
    so that rm -> student_rl -> eval_rl does not run last on one core while the other idles."""
    root, env = workflow
    proc = sh(root, env, str(BIN / "distillc"), "run", "--cores", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.M)
    built = {p.stem for p in (root / "build" / "tiny" / "stages").glob("*.yaml")}
    assert set(started) - {"all"} == built, started  # every stage ran, once
    assert len(started) == len(set(started)), started
    for later in ("student_rl_gold", "student_rl_majority", "eval_sft", "eval_teacher", "eval_student"):
        assert started.index("rm") < started.index(later), started
