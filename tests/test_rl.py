"""rl on tiny models: a reward model trained here on an easy preference, a random-init policy."""

from __future__ import annotations

import math
import os
import random
import shutil
from pathlib import Path

import pytest
import yaml

from compiler.spec.contract import StageConfig
from conftest import build_spec
from runtime.lib import models
from runtime import reward_model
from runtime import rl
from runtime.lib import task
from runtime.lib.common import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 96}}
WORDS = "Tom has apples then gives away books Ann eggs sells how many more".split()
FAST = {"batch_size": 16, "response_length": 8, "learning_rate": 1e-2}  # tiny models take large steps
RL_STAGES = {
    "ppo": {"episodes": 16 * 30, "ppo_epochs": 4, "mini_batches": 2, **FAST},
    "grpo": {"algorithm": "grpo", "episodes": 16 * 30, "num_generations": 4, **FAST},
    "restart": {"episodes": 16 * 6, "save_every_steps": 2, **FAST},
    "majority": {
        "algorithm": "rloo",
        "reward": "majority",
        "reward_model": None,
        "votes": "votes",
        "episodes": 16 * 30,
        "num_generations": 4,
        **FAST,
    },
    "gold": {"algorithm": "grpo", "reward": "gold", "reward_model": None, "episodes": 16 * 2, **FAST},
}
SEVEN = "7"  # the pseudo-label every question gets in the majority test: a target a random policy can find


def spec() -> dict:
    rl_stages = {
        sid: {k: v for k, v in {"kind": "rl", "policy": "sft", "reward_model": "rm", **p}.items() if v is not None}
        for sid, p in RL_STAGES.items()
    }
    return {
        "name": "rl",
        "seed": 1,
        "models": {"m": TINY},
        "task": {"synthetic": {"gold_size": 20, "dev_size": 0, "distill_size": 64, "test_size": 4}},
        "stages": {
            "samples": {"kind": "generate", "model": "m", "max_new_tokens": 16},
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "sft": {"kind": "sft", "model": "m", "data": "votes"},
            "rm": {
                "kind": "reward_model",
                "data": "votes",
                "model": "m",
                "epochs": 3,
                "learning_rate": 3e-3,
                "batch_size": 16,
            },
            **rl_stages,
        },
    }


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Built once: a reward model preferring digits over words, and a random-init policy as the SFT student."""
    root, cwd = tmp_path_factory.mktemp("rl"), os.getcwd()
    os.chdir(root)
    try:
        configs = build_spec(spec(), root)
        rm_cfg = load(configs["rm"])
        rng = random.Random(0)
        pairs = [
            {
                "question_id": q["id"],
                "chosen": " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(2, 8))),
                "rejected": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))),
                "chosen_source": "t",
                "rejected_source": "s",
            }
            for q in task.questions(rm_cfg.task, "distill", rm_cfg.spec_seed)
            for _ in range(2)
        ]
        write_jsonl(rm_cfg.inputs["data_pairs"], pairs)
        write_jsonl(rm_cfg.inputs["data_labels"], [])
        reward_model.main(["--config", str(configs["rm"]), "--threads", "1"])
        votes = load(configs["majority"]).inputs["votes_labels"]  # after the RM: every question's label is 7
        write_jsonl(
            votes,
            [
                {"question_id": q["id"], "pseudo_label": SEVEN, "label": 1, "role": "teacher"}
                for q in task.questions(rm_cfg.task, "distill", rm_cfg.spec_seed)
            ],
        )
        policy = load(configs["ppo"]).models["policy"]
        models.save(*models.load_causal_lm(rm_cfg.models["model"], rm_cfg.task, rm_cfg.spec_seed), policy.path)
    finally:
        os.chdir(cwd)
    return root, configs


def load(path: Path) -> StageConfig:
    return StageConfig.model_validate(yaml.safe_load(path.read_text()))


def run(workflow, monkeypatch, stage: str) -> tuple[StageConfig, list[dict]]:
    root, configs = workflow
    monkeypatch.chdir(root)
    rl.main(["--config", str(configs[stage]), "--threads", "1"])
    cfg = load(configs[stage])
    return cfg, read_jsonl(cfg.outputs["log"])


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def mean(xs) -> float:
    return sum(xs) / len(xs)


def check_run(cfg: StageConfig, rows: list[dict], steps: int) -> None:
    """Effects every algorithm must have: a row per step with the keys, finite KL, a changed policy."""
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all({"step", "reward", "kl", "entropy", "loss"} <= set(r) for r in rows)
    assert all(math.isfinite(r["kl"]) and math.isfinite(r["reward"]) for r in rows)
    assert read_jsonl(Path(cfg.outputs["model"]) / "train_log.jsonl") == rows
    before, after = weights(cfg.models["policy"].path), weights(cfg.outputs["model"])
    assert any(not (before[k] == after[k]).all() for k in before), "the policy did not change"


def test_ppo_raises_the_learned_reward(workflow, monkeypatch):
    cfg, rows = run(workflow, monkeypatch, "ppo")
    check_run(cfg, rows, 30)
    rewards = [r["reward"] for r in rows]
    # it learns fast: compare the very start. Measured rise over seeds 1-3: +0.42, +0.66, +2.28
    assert mean(rewards[-10:]) > mean(rewards[:5]) + 0.25, rewards
    assert rows[-1]["kl"] > 0  # it moved away from the reference, within bounds
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(cfg.outputs["model"]) is not None
    assert AutoTokenizer.from_pretrained(cfg.outputs["model"]).chat_template


def test_grpo_raises_the_learned_reward(workflow, monkeypatch):
    cfg, rows = run(workflow, monkeypatch, "grpo")
    check_run(cfg, rows, 30)
    rewards = [r["reward"] for r in rows]
    assert mean(rewards[-10:]) > mean(rewards[:10]) + 0.25, rewards  # measured over seeds 1-3: +1.42, +1.80, +1.63


def test_ppo_restarts_from_its_last_snapshot(workflow, monkeypatch, capsys):
    cfg, first = run(workflow, monkeypatch, "restart")
    latest = Path(cfg.out_dir) / "checkpoints" / "latest"
    assert yaml.safe_load((latest / "progress.json").read_text()) == {"step": 4}
    shutil.rmtree(cfg.outputs["model"])  # as Snakemake does after a failed job
    Path(cfg.outputs["log"]).unlink()
    capsys.readouterr()
    cfg, again = run(workflow, monkeypatch, "restart")
    assert "restarting from" in capsys.readouterr().err
    check_run(cfg, again, 6)
    assert again[:4] == first[:4]  # kept from the snapshot, not retrained


def test_majority_reward_is_learned_without_a_reward_model(workflow, monkeypatch):
    """RLOO on the pseudo-label reward: answering the voted "7" pays; a random policy finds it and learns it."""
    cfg, rows = run(workflow, monkeypatch, "majority")
    check_run(cfg, rows, 30)
    rewards = [r["reward"] for r in rows]
    assert all(0.0 <= r <= 1.0 for r in rewards)  # 0/1 answer matches, averaged
    assert "rewards/majority_answer/mean" in rows[0]
    # measured rise over seeds 1-3: +0.45, +0.375, +0.34; with no learning the two means differ by ~0.05 (sd)
    assert mean(rewards[-10:]) > mean(rewards[:10]) + 0.15, rewards


def test_gold_reward_scores_answers_against_gold(workflow, monkeypatch):
    """The oracle rung reads gold distill answers: 1 exactly when the extracted answer equals the target."""
    root, configs = workflow
    cfg = load(configs["gold"])
    targets = rl.answer_targets(cfg, cfg.stage())
    gold = {r["id"]: r["target"] for r in task.gold(cfg.task, "distill", cfg.spec_seed)}
    assert targets == gold
    q, t = next(iter(gold.items()))
    reward = rl.answer_reward(targets, "gsm8k", "gold_answer")
    done = [[{"role": "assistant", "content": text}] for text in (f"3 + 4 = 7. #### {t}", f"#### {int(t) + 1}", "")]
    assert reward(None, done, [q] * 3) == [1.0, 0.0, 0.0]
    cfg, rows = run(workflow, monkeypatch, "gold")
    check_run(cfg, rows, 2)
    assert "rewards/gold_answer/mean" in rows[0]
    assert all(0 <= r["completions/clipped_ratio"] <= 1 for r in rows)  # the share of rollouts cut off
