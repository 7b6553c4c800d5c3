"""A stage's start-up, made cheaper without touching a single number it computes.

A model stage spends its first seconds importing torch, transformers and TRL (about
half a million long-lived objects). Two costs there are not the libraries' own work:

- Python's full garbage collections: the heap grows by the imports, so every full
  collection walks all of it again (about 0.7 s of CPU per stage, measured with
  gc.callbacks). `begin` turns full collections off until `settle`, which freezes
  what exists by then (the libraries and the loaded models: they live until exit)
  and turns them back on for the work. Young collections run all along, so cyclic
  garbage made while starting is still freed.
- Experiment trackers the spec did not ask for: transformers and TRL import every
  installed one at import time (`trl.extras.profiling` imports mlflow: about 1 s
  of CPU in every grpo/rloo stage). The integrations' own switch turns MLflow off
  unless the spec's `tracking:` chose it (then it is on, whatever the environment inherited).

pseudo_reward and report import little and end in a second or two: they never settle.
Neither changes what a stage computes: collections only free unreachable objects,
and a tracker that is off is one no stage reports to.
"""

from __future__ import annotations

import gc
import os

from compiler.spec.contract import StageConfig

from .tracking import settings

DEFAULT_FULL = gc.get_threshold()[2]  # gc's third threshold: middle-generation collections per full one
NEVER = 10**9
MLFLOW_OFF = "DISABLE_MLFLOW_INTEGRATION"  # transformers' switch


def begin(cfg: StageConfig) -> None:
    """Called once a stage has read its config, before it imports its libraries."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    if settings(cfg).backend == "mlflow":
        os.environ.pop(MLFLOW_OFF, None)  # the spec asks for MLflow: an inherited switch must not drop it
    else:
        os.environ.setdefault(MLFLOW_OFF, "TRUE")


def settle() -> None:
    """Called where a stage starts its first unit of work: its imports and models are loaded.

    Freezing keeps full collections from walking those objects again; a second call
    only freezes what came since.
    """
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, DEFAULT_FULL)
