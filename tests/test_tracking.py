"""Tracking and model cards on one real (short) sft stage run as its CLI: TensorBoard event
files beside the model, an MLflow run in a local file store, a hub model card that parses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import build_spec

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

TASK = {
    "synthetic": {
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 5,
        "gold_size": 64,
        "dev_size": 8,
        "distill_size": 8,
        "test_size": 8,
    }
}
MODEL = {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 48}}


def test_sft_writes_tensorboard_mlflow_and_a_model_card(tmp_path, monkeypatch):
    import mlflow
    from huggingface_hub import ModelCard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = {
        "name": "tracked",
        "seed": 0,
        "task": TASK,
        "models": {"m": MODEL},
        "stages": {
            "s": {"kind": "sft", "model": "m", "data": "gold", "max_steps": 6, "batch_size": 8, "eval_every_steps": 3}
        },
        "tracking": {"backend": "mlflow"},
    }
    config = build_spec(spec, tmp_path)["s"]
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.sft", "--config", str(config), "--threads", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = tmp_path / "runs" / "tracked" / "s"

    events = sorted((stage / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(stage.iterdir())
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "runs" / "tracked" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["tracked/s"]
    assert runs[0].data.tags["distillc.stage"] == "s" and "loss" in runs[0].data.metrics

    card = ModelCard.load(stage / "model" / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and "sft" in meta["tags"]
    assert meta["distillc"]["spec_hash"].startswith("sha256:") and meta["distillc"]["init"]["hidden_size"] == 16
    (result,) = card.data.eval_results
    assert result.metric_name == "greedy dev accuracy" and 0 <= result.metric_value <= 1
    assert "spec hash" in card.text and "`s`" in card.text
