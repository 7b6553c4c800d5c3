"""Model cards: every model folder gets a README.md in the hub's format (YAML front matter + text).

So `huggingface-cli upload` of runs/<spec>/<stage>/model is a proper hub model:
base model (or the init config it started from), library, tags, the data it was
trained on, the metrics this stage measured, and how it was made, with the spec hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.layout import LOCK_FILE
from compiler.spec.rewards import REWARD_SOURCES


def _lock(cfg: StageConfig) -> dict:
    path = cfg.build_file(LOCK_FILE)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def data_sources(cfg: StageConfig, split: str) -> tuple[list[str], str]:
    """(hub dataset ids, a sentence) for the task split this stage trained on."""
    task = cfg.task
    if task.synthetic is not None:
        return [], f"the built-in synthetic task (`{split}` split, seed {cfg.spec_seed})"
    src = getattr(task, split, None) or task.distill
    assert src is not None, "a task without synthetic data has a distill split"
    if src.hub:
        return [src.hub], f"`{src.hub}` ({src.subset or 'default'} / {src.split}) as the `{split}` split"
    return [], f"the local file `{Path(src.path or '').name}` as the `{split}` split"


def metric_type(name: str) -> str:
    """The model-index metric type from a result's name: "... accuracy" -> accuracy, "final KL ..." -> kl."""
    lowered = name.lower()
    return next((t for t in ("accuracy", "reward", "kl") if t in lowered.split(" ")), "value")


def own_results(cfg: StageConfig, results: dict[str, float | None] | None, datasets: list[str]) -> list:
    """EvalResults for what the training stage measured itself: a bootstrap's dev accuracy, a reward
    model's held-out pairwise accuracy, an rl policy's final reward and KL on its rollouts."""
    from huggingface_hub import EvalResult

    st = cfg.stage()
    classifier = not st.produces_model  # the reward model: scores, not text
    split = "dev" if getattr(st, "data", None) == "gold" else "distill"
    what = (
        "held-out pseudo-labelled pairs" if classifier else "dev" if split == "dev" else "rollouts on distill questions"
    )
    return [
        EvalResult(
            task_type="text-classification" if classifier else "text-generation",
            dataset_type=datasets[0] if datasets else f"distillc/{cfg.spec_name}",
            dataset_name=f"{cfg.spec_name} {what}",
            dataset_split=split,
            metric_type=metric_type(name),
            metric_name=name,
            metric_value=value,
        )
        for name, value in (results or {}).items()
        if value is not None
    ]


def card_text(cfg: StageConfig, results: dict[str, float | None] | None = None, batch: dict | None = None) -> str:
    """The README.md of this stage's model folder; `results`: metric name -> value this stage measured;
    `batch`: the optimizer step's batch (runtime/lib/ranks.py `batch`), which processes change."""
    from huggingface_hub import ModelCard, ModelCardData

    lock, st = _lock(cfg), cfg.stage()
    ref = cfg.models[st.starts_from]  # the role holding the starting weights (its kind's fact)
    root = lock.get("spec", {}).get("models", {}).get(ref.base, {})
    hub_base = root.get("path") if root.get("path") and not str(root["path"]).startswith("/") else None
    split = "gold" if getattr(st, "data", None) == "gold" else "distill"
    datasets, data_text = data_sources(cfg, split)
    classifier = not st.produces_model  # a model folder that is no causal LM: the reward model's
    tags = ["distillc", "distillation", cfg.kind] + ([st.algorithm] if hasattr(st, "algorithm") else [])
    evals = own_results(cfg, results, datasets)
    data = ModelCardData(
        base_model=hub_base,
        library_name="transformers",
        tags=tags,
        datasets=datasets or None,
        pipeline_tag="text-classification" if classifier else "text-generation",
        model_name=f"{cfg.spec_name}/{cfg.id}",
        eval_results=evals or None,
        distillc={
            "spec": cfg.spec_name,
            "stage": cfg.id,
            "kind": cfg.kind,
            "spec_hash": lock.get("spec_hash"),
            "upstream": cfg.upstream,
            "init": root.get("init") if root.get("init") else None,
            "batch": batch,
        },
    )
    start = f"`{ref.name}`" + (f" (from `{hub_base}`)" if hub_base and ref.name != hub_base else "")
    if root.get("init"):
        start += (
            f", whose lineage starts from a random-init `{root['init'].get('arch', 'llama')}` model "
            f"built from the spec's `init:` block"
        )
    upstream = ", ".join(f"{role}: `{', '.join(ids)}`" for role, ids in sorted(cfg.upstream.items())) or "none"
    body = [
        f"# {cfg.spec_name}/{cfg.id}",
        "",
        f"Made by distillc stage `{cfg.id}` (kind `{cfg.kind}`) of spec `{cfg.spec_name}`: {st.made_by}.",
        "",
        f"- starting weights: {start}",
        f"- trained on: {data_text}",
        f"- upstream stages: {upstream}",
        f"- seed: {cfg.seed}; spec hash: `{lock.get('spec_hash', 'unknown')}`",
    ]
    if getattr(st, "reward", None) in REWARD_SOURCES:  # an rl stage: how it was rewarded
        body.insert(-1, f"- algorithm: {st.algorithm}; reward: {REWARD_SOURCES[st.reward].card}")
    if batch:
        body.insert(
            -1,
            f"- batch: {batch['effective_batch_size']} per optimizer step ({batch['per_device_batch_size']} per "
            f"process x {batch['processes']} process(es) x {batch['grad_accum']} accumulation)",
        )
    body += [f"- {e.metric_name}: {e.metric_value:.4f}" for e in evals]
    body += [
        "",
        "The training log is `train_log.jsonl` in this folder; the run's report (runs/"
        f"{cfg.spec_name}/report/) compares this model with the others on held-out questions.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n").content
