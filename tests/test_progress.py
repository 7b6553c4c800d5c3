"""Progress as a user sees it: short lines on Snakemake's terminal (the rule's fd 3) while the
full log goes to the log file, and an eval's questions counted as lm-eval answers them.

The stage runs with the rule's exact shell redirections; the whole tiny pipeline's terminal
is checked in test_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_spec, synthetic_task

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

BIN = Path(sys.executable).parent
QUESTIONS = 120
SPEC = {
    "name": "prog",
    "seed": 0,
    "task": synthetic_task(gold_size=0, dev_size=0, distill_size=4, test_size=QUESTIONS),
    "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 64}}},
    "stages": {"ev": {"kind": "eval", "model": "m", "max_new_tokens": 16, "batch_size": 2}},
}


def rule_command(kind: str, config: str, log: str) -> list[str]:
    """The generated rule's shell command (compiler/templates/rule.smk.j2), fd 3 = the terminal."""
    return [
        "bash",
        "-c",
        f"{sys.executable} -m runtime.{kind} --config {config} --threads 1 --progress-fd 3 3>&2 > {log} 2>&1",
    ]


def wait_for_progress(path: Path, proc: subprocess.Popen) -> dict:
    """progress.json once it shows some but not all questions (polled fast: no clock in the assertion)."""
    while proc.poll() is None:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("total") and 0 < info["done"] < info["total"]:
            return info
    raise AssertionError(f"the eval ended before it reported a partial count:\n{proc.stderr.read()}")


def test_eval_counts_questions_on_the_terminal_and_in_status(tmp_path):
    build_spec(SPEC, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        rule_command("eval", "build/prog/stages/ev.yaml", "ev.log"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = wait_for_progress(tmp_path / "runs/prog/ev/progress.json", proc)
        os.kill(info["pid"], signal.SIGSTOP)  # hold it mid-eval: `distillc status` sees it running
        try:
            status = subprocess.run(
                [str(BIN / "distillc"), "status"], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
        finally:
            os.kill(info["pid"], signal.SIGCONT)
        err = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert re.search(rf"│ ev\s+│ eval\s+│ running\s+│ [1-9]\d*/{QUESTIONS} questions", status.stdout), status.stdout
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert lines[0] == "[ev] eval started" and re.fullmatch(r"\[ev\] done in \d+ s", lines[-1]), err
    counts = [
        int(m[1]) for line in lines if (m := re.fullmatch(rf"\[ev\] (\d+)/{QUESTIONS} questions \(\d+%\).*", line))
    ]
    assert counts[0] == 0 and counts[-1] == QUESTIONS and any(0 < c < QUESTIONS for c in counts), err
    assert counts == sorted(counts) and len(counts) <= 2 + 10 + 2, err  # about one line per 10%, not per batch
    log = (tmp_path / "ev.log").read_text()
    assert f"progress: {QUESTIONS}/{QUESTIONS} questions" in log and "exact_match" in log  # the full log
    assert not any(line.startswith("[ev]") for line in log.splitlines())


def test_a_failing_stage_says_why_on_the_terminal(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        rule_command("eval", "missing.yaml", "ev.log"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr == "[eval] FAILED: missing.yaml: No such file or directory\n"
    assert (tmp_path / "ev.log").read_text().splitlines()[
        -1
    ] == "distillc: stage config missing.yaml (eval) failed: missing.yaml: No such file or directory"
