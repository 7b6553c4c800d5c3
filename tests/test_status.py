"""`distillc status` through the real CLI: a fresh build, a running run, a failed one.

The finished run is checked in test_pipeline.py, on the tiny run it already makes.
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

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

BIN = Path(sys.executable).parent


def distillc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "distillc"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def states(table: str) -> dict[str, str]:
    """Stage id -> state, from the printed table's rows."""
    found = re.findall(r"│ (\w+)\s+│ (\w+)\s+│ (pending|running|done|failed)\s", table)
    return {stage: state for stage, _, state in found}


def test_status_of_a_fresh_build_and_of_nothing(tmp_path):
    proc = distillc("status", cwd=tmp_path)
    assert proc.returncode == 2 and "nothing built here" in proc.stderr and "hint:" in proc.stderr
    assert distillc("build", str(REPO / "specs" / "tiny.yaml"), cwd=tmp_path).returncode == 0
    n = len(yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())["stages"])  # its report included
    for args in (("status",), ("status", str(REPO / "specs" / "tiny.yaml"))):
        proc = distillc(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        found = states(proc.stdout)
        assert len(found) == n and set(found.values()) == {"pending"}, proc.stdout
        assert f"{n} pending" in proc.stdout


def test_status_of_a_running_then_killed_stage(tmp_path):
    """A real sft stage under Snakemake shows running with a step count; killed, it shows failed and its log."""
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    assert distillc("build", str(REPO / "specs" / "tiny.yaml"), cwd=tmp_path).returncode == 0
    run = subprocess.Popen(
        [str(BIN / "snakemake"), "--cores", "1", "--quiet", "rules", "--until", "teacher"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, table = time.monotonic() + 180, ""
        while time.monotonic() < deadline:
            table = distillc("status", cwd=tmp_path).stdout
            if re.search(r"│ teacher\s+│ sft\s+│ running\s+│ [1-9]\d*/\d+ steps", table):
                break
            assert run.poll() is None, "snakemake ended before the stage showed progress"
            time.sleep(1)
        else:
            raise AssertionError(f"no running stage with a step count:\n{table}")
        assert states(table)["eval_teacher"] == "pending"
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # snakemake and its job: the stage dies without its outputs
        run.wait()
    for _ in range(20):  # the killed stage is gone within moments
        table = distillc("status", cwd=tmp_path).stdout
        if states(table)["teacher"] == "failed":
            break
        time.sleep(0.5)
    assert states(table)["teacher"] == "failed", table
    assert "last log line" in table and "progress" in table
