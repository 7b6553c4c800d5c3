"""head: verifier on tiny models: it trains by next-token prediction, its rewards are probabilities, the
reward_model stage and RL score through the same function, and PPO is refused at plan time."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import yaml

from compiler.spec.contract import StageConfig
from conftest import build_spec
from runtime.lib import answers
from runtime.lib import models
from runtime import reward_model
from runtime.lib import reward_scoring
from runtime import rl
from runtime.lib import task
from runtime.lib import verifier
from runtime.lib.common import read_jsonl, write_jsonl

TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 96}}
WORDS = "Tom has apples then gives away books Ann eggs sells how many more".split()


def spec(**rl_params) -> dict:
    return {
        "name": "ver",
        "seed": 2,
        "models": {"m": TINY},
        "task": {"synthetic": {"gold_size": 20, "dev_size": 0, "distill_size": 48, "test_size": 4}},
        "stages": {
            "samples": {"kind": "generate", "model": "m", "max_new_tokens": 16},
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "sft": {"kind": "sft", "model": "m", "data": "votes"},
            "rm": {
                "kind": "reward_model",
                "data": "votes",
                "model": "m",
                "head": "verifier",
                "epochs": 40,
                "learning_rate": 3e-3,
                "batch_size": 16,
                "eval_fraction": 0.25,
            },
            "rl": {
                "kind": "rl",
                "policy": "sft",
                "reward_model": "rm",
                "algorithm": "rloo",
                "episodes": 32,
                "batch_size": 16,
                "num_generations": 4,
                "response_length": 8,
                "learning_rate": 1e-2,
                **rl_params,
            },
        },
    }


def load(path: Path) -> StageConfig:
    return StageConfig.model_validate(yaml.safe_load(path.read_text()))


def write_labels(cfg: StageConfig) -> None:
    """Digits are right (label 1), words wrong (0): two per question, with the pairs pseudo_reward would make."""
    rng = random.Random(0)
    labels, pairs = [], []
    for q in task.questions(cfg.task, "distill", cfg.spec_seed):
        good = " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(2, 6)))
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        labels += [
            {
                "question_id": q["id"],
                "source": "s",
                "role": "student",
                "sample_id": k,
                "temperature": 1.0,
                "text": t,
                "answer": answers.extract(t, "gsm8k"),
                "pseudo_label": "1",
                "agreement": 1.0,
                "label": 1 - k,
            }
            for k, t in enumerate((good, bad))
        ]
        pairs.append(
            {"question_id": q["id"], "chosen": good, "rejected": bad, "chosen_source": "s", "rejected_source": "s"}
        )
    write_jsonl(cfg.inputs["data_labels"], labels)
    write_jsonl(cfg.inputs["data_pairs"], pairs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root, cwd = tmp_path_factory.mktemp("verifier"), os.getcwd()
    os.chdir(root)
    try:
        configs = build_spec(spec(), root)
        cfg = load(configs["rm"])
        write_labels(cfg)
        reward_model.main(["--config", str(configs["rm"]), "--threads", "1"])
        policy = load(configs["rl"]).models["policy"]
        models.save(*models.load_causal_lm(cfg.models["model"], cfg.task, cfg.spec_seed), policy.path)
    finally:
        os.chdir(cwd)
    return root, configs


@pytest.mark.slow
def test_the_verifier_trains_and_is_saved_as_one(trained, monkeypatch):
    root, configs = trained
    monkeypatch.chdir(root)
    cfg = load(configs["rm"])
    m = json.loads(Path(cfg.outputs["metrics"]).read_text())
    log = read_jsonl(Path(cfg.outputs["model"]) / "train_log.jsonl")
    assert m["loss_type"] == "verifier" and m["train_questions"] == 36 and m["eval_pairs"] == 12, m
    assert log[-1]["loss"] < log[0]["loss"] - 1.0, log  # next-token loss over the whole vocabulary
    assert m["train_accuracy"] == 1.0 and m["eval_accuracy"] == 1.0, m
    assert verifier.saved(cfg.outputs["model"]) and not verifier.saved(Path(cfg.outputs["model"]).parent)


@pytest.mark.slow
def test_its_rewards_are_probabilities_from_one_scoring_function(trained, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, configs = trained
    monkeypatch.chdir(root)
    path = load(configs["rm"]).outputs["model"]
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    prompt = [{"role": "user", "content": "Tom has 3 apples. How many apples does Tom have now?"}]
    texts = ["3 4 7", "Tom gives away books", "7", "Ann sells eggs"]
    convs = [prompt + reward_model.assistant(t) for t in texts]
    direct = reward_scoring.scores(model, tok, convs, 4, 96)
    assert all(0.0 < s < 1.0 for s in direct), direct
    assert direct[0] > 0.5 > direct[1] and direct[2] > 0.5 > direct[3], direct
    one_by_one = [reward_scoring.scores(model, tok, [c], 1, 96)[0] for c in convs]  # padding changes nothing
    assert max(abs(a - b) for a, b in zip(direct, one_by_one)) < 1e-5
    reward = reward_scoring.verifier_reward(path)
    via_rl = reward(prompts=[prompt] * 4, completions=[reward_model.assistant(t) for t in texts])
    assert max(abs(a - b) for a, b in zip(direct, via_rl)) < 1e-6


@pytest.mark.slow
def test_rl_runs_against_the_verifier(trained, monkeypatch):
    root, configs = trained
    monkeypatch.chdir(root)
    rl.main(["--config", str(configs["rl"]), "--threads", "1"])
    rows = read_jsonl(load(configs["rl"]).outputs["log"])
    assert [r["step"] for r in rows] == [1, 2], rows
    assert all(0.0 <= r["reward"] <= 1.0 and math.isfinite(r["kl"]) for r in rows), rows


def test_ppo_with_a_verifier_is_refused_at_plan_time(tmp_path):
    from compiler.spec.errors import SpecError

    with pytest.raises(SpecError) as err:
        build_spec(spec(algorithm="ppo", num_generations=2), tmp_path)
    assert "head: verifier" in str(err.value) and "grpo or rloo" in str(err.value)
