"""Stage start-up stays cheap: the checks are on what gets imported and set up, never on seconds
(a loaded machine must not fail them; the seconds are measured in the issue's note).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import pytest

from compiler import cli
from compiler.spec.stages import KINDS  # every stage kind's module
from conftest import REPO

# Seconds of import each: a stage imports them inside main(), when and where it uses them.
HEAVY = (
    "torch",
    "transformers",
    "trl",
    "lm_eval",
    "datasets",
    "matplotlib",
    "peft",
    "accelerate",
    "mlflow",
    "scipy",
    "pandas",
)


def python(code: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("DISABLE_MLFLOW_INTEGRATION", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_stage_modules_import_no_heavy_library():
    """`python -m runtime.<kind>` reaches argument parsing and config loading before any ML library."""
    proc = python(
        f"import sys\nfor k in {KINDS!r}: __import__('runtime.' + k)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported at module level: {proc.stdout}"


START = """
import gc, json, os, sys
from runtime.lib.common import start
from runtime.lib.startup import DEFAULT_FULL, NEVER, settle
start(["--config", "build/tiny/stages/student_rl_gold.yaml"], "rl")
during = gc.get_threshold()[2]
from trl.extras import profiling   # what GRPO/RLOO import: it imports every tracker it may report to
imported = "mlflow" in sys.modules
settle()
print(json.dumps({"full_gc_off": during == NEVER, "mlflow_imported": imported, "frozen": gc.get_freeze_count(),
                  "full_gc_back_on": gc.get_threshold()[2] == DEFAULT_FULL}))
"""


@pytest.mark.slow
def test_start_up_skips_unasked_trackers_and_full_collections(tmp_path):
    """start() turns full garbage collections off over the imports and MLflow off unless the spec tracks
    with it; settle() freezes the loaded heap and turns full collections back on for the work."""
    spec = (REPO / "specs" / "tiny.yaml").read_text()
    for name, extra in (("plain", ""), ("mlflow", "tracking: {backend: mlflow}\n")):
        root = tmp_path / name
        root.mkdir()
        (root / "tiny.yaml").write_text(spec + extra)
        assert cli.main(["build", str(root / "tiny.yaml"), "--root", str(root)]) == 0
        proc = python(START, cwd=root)
        assert proc.returncode == 0, proc.stderr
        state = json.loads(proc.stdout.strip().splitlines()[-1])
        assert state["full_gc_off"] and state["frozen"] > 100_000 and state["full_gc_back_on"], state
        assert state["mlflow_imported"] == (name == "mlflow" and find_spec("mlflow") is not None), state
