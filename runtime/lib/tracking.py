"""Experiment tracking for the training stages: the Trainer's own `report_to` integrations.

TensorBoard event files go to runs/<spec>/<stage>/tensorboard/ (beside the model,
not inside a declared output, so a failed job keeps them). A spec's `tracking:`
block adds MLflow (a local file store in runs/<spec>/mlruns unless `uri` says
otherwise) or W&B, with one run per stage named <spec>/<stage>. The settings
come from build/<spec>/tracking.json, which no rule reads as an input: turning
tracking on or off reruns nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.layout import TRACKING_FILE
from compiler.spec.schema import Tracking

from .errors import StageError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def settings(cfg: StageConfig) -> Tracking:
    """This build's tracking settings (defaults if the build predates them)."""
    path = cfg.build_file(TRACKING_FILE)
    return Tracking.model_validate(json.loads(path.read_text())) if path.exists() else Tracking()


def tracking_args(cfg: StageConfig) -> dict:
    """TrainingArguments fields (report_to, run_name) for this stage; sets the integrations' env vars."""
    t = settings(cfg)
    report_to = (["tensorboard"] if t.tensorboard else []) + ([t.backend] if t.backend != "none" else [])
    missing = [PACKAGES[name] for name in report_to if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise StageError(
            f"tracking: {', '.join(missing)} is not installed; `pip install {' '.join(missing)}`, "
            "or turn it off in the spec's `tracking:` block"
        )
    if t.tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.out_dir).resolve() / "tensorboard")
    if t.backend == "mlflow":
        uri = t.uri or (Path(cfg.run_dir).resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps its file store working, but only when asked for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.update(
            MLFLOW_TRACKING_URI=uri,
            MLFLOW_EXPERIMENT_NAME=t.experiment or cfg.spec_name,
            MLFLOW_TAGS=json.dumps(
                {"distillc.spec": cfg.spec_name, "distillc.stage": cfg.id, "distillc.kind": cfg.kind}
            ),
        )
    elif t.backend == "wandb":
        os.environ.setdefault("WANDB_PROJECT", t.experiment or cfg.spec_name)
    return {"report_to": report_to or "none", "run_name": f"{cfg.spec_name}/{cfg.id}"}
