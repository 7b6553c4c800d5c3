"""`distillc validate | plan | build | schema` on the shipped specs, and how the CLI fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from compiler import cli

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted((REPO / "specs").glob("*.yaml"))


def test_there_are_specs_to_check():
    assert "tiny" in {p.stem for p in SPECS}


@pytest.mark.parametrize("spec_file", SPECS, ids=lambda p: p.stem)
@pytest.mark.usefixtures("hub_reachable")  # paper_gsm8k names hub models this machine has not cached
def test_every_shipped_spec_validates_and_builds(spec_file, tmp_path, capsys):
    spec = tmp_path / spec_file.name
    shutil.copy(spec_file, spec)
    for extra in spec_file.parent.glob("*.jsonl"):  # data files a spec may point to
        shutil.copy(extra, tmp_path / extra.name)
    assert cli.main(["validate", str(spec), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{spec}: ok (") and not (tmp_path / "build").exists()

    assert cli.main(["build", str(spec), "--root", str(tmp_path)]) == 0
    name = yaml.safe_load(spec_file.read_text())["name"]
    build = tmp_path / "build" / name
    assert (tmp_path / "build/LATEST").read_text() == name + "\n"
    stages = sorted(p.stem for p in (build / "stages").glob("*.yaml"))
    assert out.endswith(f"({len(stages)} stages)\n")
    assert set(json.loads((build / "resources.json").read_text())) == set(stages)
    assert json.loads((build / "spec.lock.json").read_text())["spec_hash"].startswith("sha256:")


def test_schema_is_a_json_schema_that_accepts_every_spec(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for spec_file in SPECS:
        validator.validate(yaml.safe_load(spec_file.read_text()))
    bad = yaml.safe_load((REPO / "tests/bad_specs/typo_stage_key.yaml").read_text())
    assert any("epocs" in e.message for e in validator.iter_errors(bad))


def test_an_internal_error_is_one_line_unless_debugging(tmp_path, monkeypatch, capsys):
    import compiler.plan

    def broken(*args, **kwargs):
        raise RuntimeError("planner exploded")

    monkeypatch.setattr(compiler.plan, "build_plan", broken)
    spec = str(REPO / "specs" / "tiny.yaml")
    monkeypatch.delenv("DISTILLC_DEBUG", raising=False)
    assert cli.main(["validate", spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distillc internal error: RuntimeError: planner exploded") and "DISTILLC_DEBUG=1" in err
    monkeypatch.setenv("DISTILLC_DEBUG", "1")
    with pytest.raises(RuntimeError, match="planner exploded"):
        cli.main(["validate", spec])


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["frobnicate"], ["validate"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert "usage: distillc" in capsys.readouterr().err


@pytest.mark.slow
def test_build_from_any_folder_prints_a_command_that_works_there(tmp_path):
    """`distillc build path/to/spec.yaml` in a folder without a Snakefile: the printed command runs (dry-run)."""
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    spec = tmp_path / "mine" / "spec.yaml"
    spec.parent.mkdir()
    shutil.copy(REPO / "specs" / "tiny.yaml", spec)
    proc = subprocess.run(
        [str(bin_dir / "distillc"), "build", "mine/spec.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    command = next(line for line in proc.stdout.splitlines() if line.startswith("run it:")).split(":", 1)[1].strip()
    assert command.startswith("distillc run -s ") and command.endswith("--cores 2"), command
    dry = subprocess.run(
        f"PATH={bin_dir}:$PATH {command} -n --quiet rules",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "teacher_samples" in dry.stdout + dry.stderr and (tmp_path / "build" / "tiny").is_dir()


def test_a_reader_that_leaves_early_is_not_an_error():
    """`distillc schema | head -1`: the reader is gone before the output is written; no traceback,
    no "internal error" (the read end is closed before the command starts, so this never races)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "compiler.cli", "schema"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
    finally:
        os.close(write)
    assert out.stderr == ""
    assert out.returncode == 141
