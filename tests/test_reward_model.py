"""reward_model on hand-made pairs whose chosen/rejected texts differ in a learnable way."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from runtime.lib import answers
from runtime import reward_model
from runtime.lib import reward_scoring
from runtime.lib import task
from runtime.lib.common import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 96}}


def spec(**params) -> dict:
    return {
        "name": "rm",
        "seed": 5,
        "models": {"m": TINY},
        "task": {"synthetic": {"gold_size": 20, "dev_size": 0, "distill_size": 48, "test_size": 4}},
        "stages": {
            "samples": {"kind": "generate", "model": "m", "max_new_tokens": 16},
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "rm": {
                "kind": "reward_model",
                "data": "votes",
                "model": "m",
                "batch_size": 16,
                "learning_rate": 3e-3,
                "eval_fraction": 0.25,
                **params,
            },
        },
    }


def solution(rng: random.Random, odd: bool) -> str:
    """Same shape either way; only the parity of the final answer tells chosen (odd) from rejected.

    A feature that varies from pair to pair keeps an untrained model near chance
    (a fixed difference such as "digits vs words" is separated by random weights).
    """
    while True:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if (a + b) % 2 == odd:
            return f"{a} + {b} = {a + b}. #### {a + b}"


def write_data(cfg: dict, per_question: int = 4) -> None:
    """pairs.jsonl and labels.jsonl in pseudo_reward's format: well-formed answers beat word salad."""
    rng = random.Random(0)
    pairs, labels = [], []
    for q in task.questions(task.TaskSpec.model_validate(cfg["task"]), "distill", cfg["spec_seed"]):
        for k in range(per_question):
            chosen, rejected = solution(rng, True), solution(rng, False)
            pairs.append(
                {
                    "question_id": q["id"],
                    "chosen": chosen,
                    "rejected": rejected,
                    "chosen_source": "t",
                    "rejected_source": "s",
                }
            )
            for i, (text, label) in enumerate(((chosen, 1), (rejected, 0))):
                labels.append(
                    {
                        "question_id": q["id"],
                        "source": "s",
                        "role": "student",
                        "sample_id": 2 * k + i,
                        "temperature": 1.0,
                        "text": text,
                        "answer": answers.extract(text, "gsm8k"),
                        "pseudo_label": "0",
                        "agreement": 1.0,
                        "label": label,
                    }
                )
    write_jsonl(cfg["inputs"]["data_pairs"], pairs)
    write_jsonl(cfg["inputs"]["data_labels"], labels)


def run(path: Path) -> tuple[dict, dict]:
    reward_model.main(["--config", str(path), "--threads", "1"])
    cfg = yaml.safe_load(path.read_text())
    return cfg, json.loads(Path(cfg["outputs"]["metrics"]).read_text())


def test_pairwise_learns_the_preference_on_held_out_questions(built):
    path = built(spec(loss="pairwise", epochs=3))["rm"]
    write_data(yaml.safe_load(path.read_text()))
    cfg, m = run(path)
    assert m["eval_pairs"] == 48 and m["train_pairs"] == 144 and m["eval_questions"] == 12
    assert m["eval_accuracy"] >= 0.8, m  # measured over seeds 5-7 and 1-2 threads: 0.90-1.00
    assert m["train_accuracy"] >= 0.8, m
    model_dir = Path(cfg["outputs"]["model"])
    assert (model_dir / "config.json").exists() and (model_dir / "tokenizer.json").exists()
    log = read_jsonl(model_dir / "train_log.jsonl")
    assert len(log) >= 2 and all({"step", "loss"} <= set(r) for r in log)
    assert log[-1]["loss"] < log[0]["loss"], log
    # the saved model reloads as a scalar-head classifier and keeps its preference
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    prompt = [{"role": "user", "content": "Tom has 3 apples. How many apples does Tom have now?"}]
    s = reward_scoring.scores(
        model, tok, [prompt + reward_model.assistant(t) for t in ("3 + 4 = 7. #### 7", "3 + 5 = 8. #### 8")], 2, 96
    )
    assert s[0] > s[1]


def test_pointwise_learns_from_labels(built):
    path = built(spec(loss="pointwise", epochs=2))["rm"]
    write_data(yaml.safe_load(path.read_text()))
    _, m = run(path)
    assert m["loss_type"] == "pointwise" and m["eval_accuracy"] >= 0.8, m


def test_pair_accuracy_is_not_trivially_high(built):
    """The measure itself: a response never beats itself, and swapping every pair turns accuracy a into 1 - a.

    (An untrained model's accuracy is no good control: across seeds it ranged 0.375-0.77, because random
    weights can separate the final digit's parity.)
    """
    path = built(spec(max_steps=1, learning_rate=1e-9))["rm"]
    cfg = yaml.safe_load(path.read_text())
    write_data(cfg)
    _, m = run(path)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = cfg["outputs"]["model"]
    model, tok = AutoModelForSequenceClassification.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    prompts = {
        q["id"]: task.messages(q, task.TaskSpec.model_validate(cfg["task"]))
        for q in task.questions(task.TaskSpec.model_validate(cfg["task"]), "distill", cfg["spec_seed"])
    }
    pairs = read_jsonl(cfg["inputs"]["data_pairs"])[:40]
    rows = reward_model.preference_rows(pairs, prompts)
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    itself = [{**r, "rejected": r["chosen"]} for r in rows]
    params = type("P", (), {"batch_size": 16, "max_length": 96})
    a, b = reward_model.pair_accuracy(model, tok, rows, params), reward_model.pair_accuracy(model, tok, swapped, params)
    assert a + b == pytest.approx(1.0) and reward_model.pair_accuracy(model, tok, itself, params) == 0.0
    assert m["steps"] == 1 and 0.0 <= m["eval_accuracy"] <= 1.0


def test_resumes_from_checkpoint_and_restarts_when_config_changes(built, capsys):
    path = built(spec(max_steps=4))["rm"]
    cfg = yaml.safe_load(path.read_text())
    write_data(cfg, per_question=1)
    run(path)
    ckpt = Path(cfg["out_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-4"]
    first = Path(cfg["outputs"]["metrics"]).read_text()
    capsys.readouterr()
    _, m = run(path)  # a rerun (outputs deleted or not) resumes at step 4
    assert "resuming from" in capsys.readouterr().err and m["steps"] == 4
    assert Path(cfg["outputs"]["metrics"]).read_text() == first
    built(spec(max_steps=3))  # another setting: the old checkpoint must not be used
    _, m = run(path)
    assert "resuming from" not in capsys.readouterr().err and m["steps"] == 3
