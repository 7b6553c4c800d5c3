"""One error path at run time: a failing stage prints ONE line naming the stage, its kind and,
where a file is at fault, file:line; a traceback only with DISTILLC_DEBUG=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = {
    "name": "x",
    "task": {"synthetic": {"gold_size": 0, "dev_size": 0, "distill_size": 4, "test_size": 4}},
    "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}}},
    "stages": {
        "samples": {"kind": "generate", "model": "m", "max_new_tokens": 8},
        "votes": {"kind": "pseudo_reward", "teacher": "samples"},
    },
}


def stage(kind: str, config: str, cwd: Path, debug: bool = False) -> subprocess.CompletedProcess:
    """`python -m runtime.<kind>` as Snakemake runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILLC_DEBUG": "1" if debug else "0"}
    return subprocess.run(
        [sys.executable, "-m", f"runtime.{kind}", "--config", config],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failure_lines(err: str) -> list[str]:
    """Everything but the stage's own timestamped log lines."""
    return [line for line in err.splitlines() if not line.startswith("[")]


def response(qid: str) -> str:
    return json.dumps(
        {
            "question_id": qid,
            "sample_id": 0,
            "temperature": 1.0,
            "seed": 1,
            "text": "#### 3",
            "answer": "3",
            "tokens": 2,
        }
    )


@pytest.fixture
def votes(built, tmp_path):
    """The pseudo_reward stage's config, and its teacher's responses.jsonl (not yet written)."""
    built(SPEC)
    out = tmp_path / "runs/x/samples/responses.jsonl"
    out.parent.mkdir(parents=True)
    return "build/x/stages/votes.yaml", out


def test_a_truncated_intermediate_file_is_one_line_with_its_place(votes, tmp_path):
    config, responses = votes
    responses.write_text(response("distill-00000") + "\n" + response("distill-00001")[:25])
    run = stage("pseudo_reward", config, tmp_path)
    assert run.returncode == 1
    assert failure_lines(run.stderr) == [
        "distillc: stage 'votes' (pseudo_reward) failed: runs/x/samples/responses.jsonl:2: not valid JSON "
        "(a truncated or corrupted file? delete it and run again to rebuild it)"
    ], run.stderr
    debug = stage("pseudo_reward", config, tmp_path, debug=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "responses.jsonl:2" in debug.stderr


def test_an_unexpected_error_is_one_line_naming_the_code(votes, tmp_path):
    config, responses = votes
    responses.write_text(json.dumps({"question_id": "distill-00000"}) + "\n")  # valid JSON, fields missing
    run = stage("pseudo_reward", config, tmp_path)
    lines = failure_lines(run.stderr)
    assert run.returncode == 1 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("distillc: stage 'votes' (pseudo_reward) failed: KeyError: ")
    assert "(at runtime/pseudo_reward.py:" in lines[0] and lines[0].endswith("DISTILLC_DEBUG=1 shows the traceback")


def test_a_broken_stage_config_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    run = stage("sft", "bad.yaml", tmp_path)
    assert run.returncode == 1 and failure_lines(run.stderr) == [
        "distillc: stage config bad.yaml (sft) failed: bad.yaml: not a stage config this distillc can read "
        "(while parsing a flow node); run `distillc build` again"
    ], run.stderr
    run = stage("eval", "missing.yaml", tmp_path)
    assert failure_lines(run.stderr) == [
        "distillc: stage config missing.yaml (eval) failed: missing.yaml: No such file or directory"
    ], run.stderr


def test_a_corrupt_json_file_names_its_line(tmp_path):
    from compiler.data.rows import DataError
    from runtime.lib.common import read_json

    (tmp_path / "stats.json").write_text('{\n  "kept": 3,\n  "total": ')
    with pytest.raises(DataError, match=r"stats\.json:3: not valid JSON"):
        read_json(tmp_path / "stats.json")


def test_every_stage_cli_goes_through_the_one_catch():
    """Each runtime.<kind> module runs its main through run_stage (a new kind cannot skip it)."""
    from compiler.spec.stages import KINDS

    for kind in KINDS:
        source = (REPO / "runtime" / f"{kind}.py").read_text()
        assert source.rstrip().endswith("run_stage(main)"), f"runtime/{kind}.py does not end with run_stage(main)"
