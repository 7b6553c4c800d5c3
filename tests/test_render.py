"""The renderer: idempotent builds, precise reruns, and no spec value ever run as code.

The Snakemake checks drive the real `snakemake` CLI (dry runs and --lint) on a build in a
temporary workflow root holding a copy of the repository's Snakefile: its `include:` resolves
against the Snakefile's own folder, so `-s <repo>/Snakefile -d <root>` would read the
repository's build/ instead of the root's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compiler import cli
from compiler.plan.load import load_spec_with_positions
from compiler.plan import build_plan
from compiler.plan.render import render

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SPECS = sorted((REPO / "specs").glob("*.yaml"))
each_spec = pytest.mark.parametrize("spec_file", SPECS, ids=lambda p: p.stem)
SHELL = re.compile(
    r"^\S+ -m runtime\.\w+ --config build/\w+/stages/\w+\.yaml --threads \d+ "
    r"--progress-fd 3 3>&2 > runs/\w+/logs/\w+\.log 2>&1$"
)


def snakemake(root: Path, *args: str) -> str:
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    done = subprocess.run([str(SNAKEMAKE), *args], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def job_counts(dry_run: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: rule -> number of jobs."""
    if "Nothing to be done" in dry_run:
        return {}
    table = dry_run.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.strip().splitlines()[2:]]
    return {name: int(count) for name, count in rows if name != "total"}


def shell_commands(dry_run: str) -> list[str]:
    """What `snakemake -n -p` would run (the `all` rule has none)."""
    lines = [
        line.removeprefix("Shell command: ") for line in dry_run.splitlines() if line.startswith("Shell command: ")
    ]
    return [c for c in lines if c != "None"]


def build(spec: Path, root: Path):
    """load + plan + render, as `distillc build` does; returns (plan, {file: changed})."""
    parsed, positions = load_spec_with_positions(spec)
    plan = build_plan(parsed, positions, str(spec), root)
    return plan, render(plan, root)


def snapshot(root: Path, name: str) -> dict[str, tuple[bytes, int]]:
    files = [p for p in (root / "build" / name).rglob("*") if p.is_file()] + [root / "build" / "LATEST"]
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def fake_outputs(plan, root: Path) -> None:
    """Outputs present and up to date: written in run order, all older than now, the build older still."""
    start = time.time() - 1000
    for f in (root / "build").rglob("*"):
        os.utime(f, (start, start))
    for i, job in enumerate(plan.jobs):
        for out in [*job.outputs.values(), job.benchmark]:
            path = root / out.rstrip("/")
            if out.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("fake\n")
            os.utime(path, (start + 10 + i, start + 10 + i))


def downstream(plan, stage: str) -> set[str]:
    found = {stage}
    for job in plan.jobs:  # run order: a job's deps come before it
        if found & set(job.deps) or (job.config.kind == "report" and found):
            found.add(job.id)
    return found


@pytest.fixture
def tiny(tmp_path) -> Path:
    shutil.copy(REPO / "specs" / "tiny.yaml", tmp_path / "tiny.yaml")
    return tmp_path / "tiny.yaml"


def test_rebuilding_an_unchanged_spec_touches_nothing(tiny, tmp_path, capsys):
    _, changed = build(tiny, tmp_path)
    assert changed and all(changed.values())
    before = snapshot(tmp_path, "tiny")
    time.sleep(0.01)
    assert cli.main(["build", str(tiny), "--root", str(tmp_path)]) == 0
    assert "0 file(s) changed" in capsys.readouterr().out
    assert snapshot(tmp_path, "tiny") == before


@pytest.mark.slow
def test_a_changed_field_reruns_exactly_that_stage_and_downstream(tiny, tmp_path):
    plan, _ = build(tiny, tmp_path)
    fake_outputs(plan, tmp_path)
    assert job_counts(snakemake(tmp_path, "-n")) == {}
    before = snapshot(tmp_path, "tiny")

    text = tiny.read_text()
    edited = re.sub(r"(student_sft: \{.*epochs: )\d+", r"\g<1>7", text)
    assert edited != text
    tiny.write_text(edited)
    plan, changed = build(tiny, tmp_path)
    after = snapshot(tmp_path, "tiny")
    assert {f for f in after if after[f] != before.get(f)} == {
        "build/tiny/stages/student_sft.yaml",
        "build/tiny/spec.lock.json",
    }
    assert {f for f, c in changed.items() if c} == {"build/tiny/stages/student_sft.yaml", "build/tiny/spec.lock.json"}

    rerun = job_counts(snakemake(tmp_path, "-n"))
    expected = downstream(plan, "student_sft") | {"all"}
    assert "student_rl" in expected and "teacher" not in expected
    assert rerun == {name: 1 for name in expected}


@pytest.mark.slow
def test_lint_and_dry_run(tmp_path):
    """The demo builds into a lint-clean workflow with one job per stage (+ all) and plain commands.

    (Every spec's build is checked in-process; snakemake costs seconds per call, so it runs on one.)
    """
    spec_file = REPO / "specs" / ("demo.yaml" if (REPO / "specs" / "demo.yaml").exists() else "tiny.yaml")
    shutil.copy(spec_file, tmp_path / spec_file.name)
    plan, _ = build(tmp_path / spec_file.name, tmp_path)
    assert "Congratulations, your workflow is in a good condition!" in snakemake(tmp_path, "--lint")
    dry = snakemake(tmp_path, "-n", "-p")
    assert job_counts(dry) == {**{job.id: 1 for job in plan.jobs}, "all": 1}
    commands = shell_commands(dry)
    assert len(commands) == len(plan.jobs) and all(SHELL.match(c) for c in commands), commands


# ------------------------------------------------------------------ injection
MARK = "distillc_pwned"


def payloads(tag: str) -> str:
    """Shell, Python, Jinja and YAML-tag payloads in one string, each aimed at a marker file."""
    return (
        f'$(touch {MARK}_{tag}_1) `touch {MARK}_{tag}_2` "; touch {MARK}_{tag}_3; echo " '
        f"'; touch {MARK}_{tag}_4 #\n__import__('os').system('touch {MARK}_{tag}_5')\n"
        f'""" {{ }} {{{{ 7*7 }}}} {{% raw %}} !!python/object/apply:os.system ["touch {MARK}_{tag}_6"]'
    )


def injected_spec() -> dict:
    text = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    text["task"] = {
        "distill": {"hub": payloads("hub"), "subset": payloads("subset"), "split": payloads("split")},
        "test": {"hub": payloads("test")},
        "system_prompt": payloads("prompt"),
    }
    text["models"]["teacher_base"] = {"path": "org/model", "revision": payloads("revision")}
    text["stages"]["teacher"] = {"kind": "generate", "model": "teacher_base"}  # no gold corpus: no bootstrap
    text["stages"]["teacher_samples"]["model"] = "teacher_base"
    text["stages"]["eval_teacher"]["model"] = "teacher_base"
    # a hub teacher cannot teach an `init:` student through its logits (no shared tokenizer: refused)
    text["stages"] = {
        sid: st
        for sid, st in text["stages"].items()
        if st.get("kind") != "distill_logits"
        and st.get("model") not in [s for s, v in text["stages"].items() if v.get("kind") == "distill_logits"]
    }
    return text


@pytest.mark.slow
def test_payloads_travel_as_data_and_never_run(tmp_path, capsys, hub_reachable):
    # The spec's file name is a payload too.
    spec = tmp_path / f"evil\n__import__('os').system('touch {MARK}_file')\n#.yaml"
    spec.write_text(yaml.safe_dump(injected_spec(), sort_keys=False))
    assert cli.main(["build", str(spec), "--root", str(tmp_path)]) == 0, capsys.readouterr().err

    workflow = (tmp_path / "build/tiny/workflow.smk").read_text()
    resources = (tmp_path / "build/tiny/resources.json").read_text()
    # Neither the file name nor any spec value reaches workflow.smk: its header names the validated spec name.
    assert workflow.startswith('# Generated by distillc from spec "tiny".')
    for text in (workflow, resources):
        assert "touch" not in text and "7*7" not in text and '"""' not in text and "__import__" not in text
    config = yaml.safe_load((tmp_path / "build/tiny/stages/sft_samples.yaml").read_text())
    assert config["task"]["system_prompt"] == payloads("prompt")
    assert config["task"]["distill"]["hub"] == payloads("hub")
    teacher = yaml.safe_load((tmp_path / "build/tiny/stages/teacher_samples.yaml").read_text())
    assert teacher["models"]["model"]["revision"] == payloads("revision")

    dry = snakemake(tmp_path, "-n", "-p")  # parses workflow.smk: a payload there would run now
    commands = shell_commands(dry)
    assert commands and all(SHELL.match(c) for c in commands), commands
    assert "touch" not in dry
    for where in (tmp_path, Path.cwd(), Path("/tmp")):
        assert not list(where.glob(f"{MARK}*")), list(where.glob(f"{MARK}*"))


# ------------------------------------------------------------------ speed and layering
@each_spec
def test_build_takes_well_under_a_second(tmp_path, spec_file, hub_reachable):
    shutil.copy(spec_file, tmp_path / spec_file.name)
    build(tmp_path / spec_file.name, tmp_path)  # imports and first-use caches
    start = time.process_time()  # CPU time: another job on the machine must not fail this test
    build(tmp_path / spec_file.name, tmp_path)
    assert time.process_time() - start < 1.0


def test_compiler_imports_no_ml_library(tmp_path):
    code = f"""
import sys
import compiler.cli, compiler.plan.load, compiler.plan, compiler.plan.render, compiler.cli.plan
for command in (["build"], ["validate"]):   # plan runs these too, then snakemake in a subprocess (test_run.py)
    assert compiler.cli.main(command + [{str(REPO / "specs" / "tiny.yaml")!r}, "--root", {str(tmp_path)!r}]) == 0
heavy = {{"torch", "transformers", "trl", "lm_eval", "datasets", "accelerate", "peft", "matplotlib", "runtime"}}
print(sorted(heavy & {{name.split(".")[0] for name in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "build/tiny/workflow.smk").exists()


def test_a_removed_stage_leaves_no_config_behind(tiny, tmp_path):
    build(tiny, tmp_path)
    stages = tmp_path / "build/tiny/stages"
    assert (stages / "eval_rl.yaml").exists() and (tmp_path / "build/tiny/lm_eval/eval_rl").exists()
    tiny.write_text(re.sub(r"\n  eval_rl: .*", "", tiny.read_text()))
    plan, _ = build(tiny, tmp_path)
    assert "eval_rl" not in {j.id for j in plan.jobs}
    assert sorted(p.stem for p in stages.iterdir()) == sorted(j.id for j in plan.jobs)
    assert not list((tmp_path / "build/tiny/lm_eval").rglob("*eval_rl.yaml"))


def test_lock_file_rebuilds_the_same_workflow(tmp_path):
    """The lock holds the resolved spec: building from it (from another folder) changes no file."""
    spec = tmp_path / "tiny.yaml"
    shutil.copy(REPO / "specs" / "tiny.yaml", spec)
    build(spec, tmp_path)
    lock = tmp_path / "elsewhere" / "spec.lock.json"
    lock.parent.mkdir()
    shutil.copy(tmp_path / "build" / "tiny" / "spec.lock.json", lock)
    before = snapshot(tmp_path, "tiny")
    _, changed = build(lock, tmp_path)
    assert not any(changed.values()) and snapshot(tmp_path, "tiny") == before
