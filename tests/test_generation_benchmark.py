"""benchmarks/generation.py: the HF half runs end to end on a tiny setting; the vLLM half refuses clearly
and its vLLM half refused until a GPU run validates it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "generation.py"
TINY = [
    "--spec",
    "specs/tiny.yaml",
    "--model",
    "teacher_base",
    "--questions",
    "4",
    "--samples",
    "2",
    "--max-new-tokens",
    "6",
    "--batch-size",
    "2",
    "--threads",
    "1",
    "--device",
    "cpu",
]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.slow
def test_hf_dynamic_and_static_cache_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    run = bench(*TINY, "--json", str(out))
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert [r["engine"] for r in data["results"]] == ["hf dynamic", "hf static"]
    for r in data["results"]:
        assert 4 * 2 <= r["tokens"] <= 4 * 2 * 6  # at least EOS per sample, at most max_new_tokens
        assert r["tokens_per_s"] > 0 and r["end_to_end_s"] >= r["generate_s"] > 0
    assert data["parameters"] > 0 and data["hardware"].startswith("cpu")
    assert "hf static / hf dynamic: tokens/s x" in run.stdout and "end-to-end time x" in run.stdout
    assert "4 questions x 2 samples, temperature 1.0" in run.stdout


def test_vllm_engine_is_refused_until_a_gpu_run_validates_it():
    run = bench(*TINY, "--engine", "vllm")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--engine vllm is not available yet" in run.stderr and "--engine hf" in run.stderr


def test_unknown_model_is_a_user_error():
    run = bench("--spec", "specs/tiny.yaml", "--model", "teacher_bse")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "no model 'teacher_bse'" in run.stderr and 'did you mean "teacher_base"?' in run.stderr
