"""Checks that only a CUDA machine can make: skipped everywhere else (CI, the CPU demo).

scripts/gpu_check.sh runs them on the lent GPU machine (`pytest -m gpu`). What they hold: the
generate stage samples on CUDA in bf16 with the same row format as on CPU, and the benchmark's
engines run there side by side (vLLM's too, where the extra is installed).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from runtime import generate
from runtime.common import load_config, read_jsonl

from conftest import REPO

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TASK = {"synthetic": {"min_steps": 1, "max_steps": 1, "max_number": 9, "gold_size": 40, "dev_size": 8,
                      "distill_size": 32, "test_size": 8}}


def test_generate_samples_on_cuda_in_bf16(built):
    stage = {"kind": "generate", "model": "m", "temperatures": [0.0, 1.0], "samples_per_temperature": 3,
             "max_new_tokens": 12, "batch_size": 8, "device": "cuda", "precision": "bf16", "resources": {"gpus": 1}}
    config = built({"name": "gpu", "task": TASK, "models": {"m": {"init": {"hidden_size": 64, "num_heads": 4}}},
                    "stages": {"samples": stage}})["samples"]
    generate.main(["--config", str(config)])
    rows = read_jsonl(load_config(config, "generate").outputs["responses"])
    assert len(rows) == 32 * (1 + 3)
    assert all(1 <= r["num_tokens"] <= 12 and isinstance(r["text"], str) for r in rows)


def test_benchmark_runs_every_engine_on_the_gpu(tmp_path):
    engine = "all" if importlib.util.find_spec("vllm") else "hf"
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks/generation.py"), "--spec", "specs/tiny.yaml",
                          "--model", "teacher_base", "--questions", "16", "--samples", "2", "--max-new-tokens", "8",
                          "--batch-size", "8", "--device", "cuda", "--precision", "bf16", "--engine", engine,
                          "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    want = ["hf dynamic", "hf static"] + (["vllm"] if engine == "all" else [])
    assert [r["engine"] for r in data["results"]] == want and "cpu" not in data["hardware"]
    assert all(r["tokens"] >= 16 * 2 for r in data["results"])
