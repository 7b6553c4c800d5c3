"""The reward model is not broken: its score is read where it should be, and it can fit its data.

Three checks against a bug (issue 20): the score of a response is read at its last
real token whatever the padding side and however long the text; two responses that
differ only in the final number can score differently; a tiny reward model fits a
few pairs to 100% training accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runtime.lib import models
from runtime import reward_model
from runtime.lib import reward_scoring
from runtime.lib import task
from runtime.lib.common import write_jsonl

TASK = task.TaskSpec.model_validate({"synthetic": {"gold_size": 20, "dev_size": 0, "distill_size": 8, "test_size": 4}})
INIT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 96}
PROMPT = [{"role": "user", "content": "Tom has 3 apples. He buys 4 more. How many apples does Tom have now?"}]


def tiny_rm():
    from compiler.spec.contract import ModelRef

    ref = ModelRef.model_validate({"name": "m", "source": "init", "init": INIT, "base": "m"})
    return models.load_sequence_classifier(ref, TASK, 0)


def conversation(text: str) -> list[dict]:
    return PROMPT + reward_model.assistant(text)


def alone(model, tok, conv: list[dict]) -> float:
    """The score of one unpadded conversation: the head reads its last token."""
    import torch

    ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, 0].item()


def test_the_score_is_read_at_the_last_real_token_whatever_the_padding_side():
    model, tok = tiny_rm()
    convs = [conversation(t) for t in ("3 + 4 = 7. #### 7", "7", "3 + 4 = 7. Tom has 7 apples now. #### 7")]
    want = [alone(model, tok, c) for c in convs]
    assert len(set(want)) == 3  # the three differ, so a score read at a pad would show
    for side in ("right", "left"):
        tok.padding_side = side
        got = reward_scoring.scores(model, tok, convs, batch_size=3, max_length=96)
        assert max(abs(g - w) for g, w in zip(got, want)) < 1e-4, (side, got, want)


def test_a_cut_off_conversation_is_scored_at_its_end_not_in_the_middle():
    """Longer than max_length: the prompt's start is dropped, never the response's final answer."""
    model, tok = tiny_rm()
    convs = [conversation("3 + 4 = 7. #### 7"), conversation("3 + 4 = 7. #### 8")]
    full = len(tok(tok.apply_chat_template(convs[0], tokenize=False), add_special_tokens=False)["input_ids"])
    cut = reward_scoring.scores(model, tok, convs, batch_size=2, max_length=full - 6)
    assert cut[0] != cut[1], cut  # cut on the right, both would be scored at the same prompt token
    tail = tok(tok.apply_chat_template(convs[0], tokenize=False), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ][:, -(full - 6) :]
    import torch

    with torch.no_grad():
        assert abs(model(input_ids=tail).logits[0, 0].item() - cut[0]) < 1e-4


def test_responses_that_differ_only_in_the_final_number_can_score_differently():
    model, tok = tiny_rm()
    got = reward_scoring.scores(model, tok, [conversation(f"3 + 4 = 7. #### {n}") for n in range(10)], 10, 96)
    assert len({round(s, 6) for s in got}) == 10, got


def spec(**params) -> dict:
    return {
        "name": "rm",
        "seed": 5,
        "models": {"m": {"init": INIT}},
        "task": {"synthetic": {"gold_size": 20, "dev_size": 0, "distill_size": 8, "test_size": 4}},
        "stages": {
            "samples": {"kind": "generate", "model": "m", "max_new_tokens": 16},
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "rm": {
                "kind": "reward_model",
                "data": "votes",
                "model": "m",
                "batch_size": 8,
                "eval_fraction": 0.25,
                **params,
            },
        },
    }


@pytest.mark.slow
def test_a_tiny_reward_model_fits_a_few_pairs_that_differ_only_in_the_final_number(built):
    """Overfitting is the least a model that is not broken can do: 100% of its own training pairs."""
    path = built(spec(loss="pairwise", epochs=60, learning_rate=3e-3))["rm"]
    cfg = yaml.safe_load(path.read_text())
    write_pairs(cfg)
    reward_model.main(["--config", str(path), "--threads", "1"])
    m = json.loads(Path(cfg["outputs"]["metrics"]).read_text())
    assert m["train_pairs"] == 6 and m["train_accuracy"] == 1.0, m


def write_pairs(cfg: dict) -> None:
    """One pair a question: the right sum above the same text ending one higher."""
    pairs, labels = [], []
    for i, q in enumerate(task.questions(task.TaskSpec.model_validate(cfg["task"]), "distill", cfg["spec_seed"])):
        a, b = i % 5 + 1, i % 3 + 2
        good, bad = f"{a} + {b} = {a + b}. #### {a + b}", f"{a} + {b} = {a + b}. #### {a + b + 1}"
        pairs.append(
            {"question_id": q["id"], "chosen": good, "rejected": bad, "chosen_source": "s", "rejected_source": "s"}
        )
        labels += [
            {
                "question_id": q["id"],
                "source": "s",
                "role": "student",
                "sample_id": k,
                "temperature": 1.0,
                "text": t,
                "answer": str(a + b + k),
                "pseudo_label": str(a + b),
                "agreement": 1.0,
                "label": 1 - k,
            }
            for k, t in enumerate((good, bad))
        ]
    write_jsonl(cfg["inputs"]["data_pairs"], pairs)
    write_jsonl(cfg["inputs"]["data_labels"], labels)


def test_loss_both_is_the_weighted_sum_of_the_pairwise_and_pointwise_terms():
    import math

    import torch

    chosen, rejected = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 3.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bt = -sum(math.log(sig(c - r)) for c, r in zip(chosen.tolist(), rejected.tolist())) / 3
    bce = (
        -sum(math.log(sig(c)) for c in chosen.tolist()) / 3 - sum(math.log(1 - sig(r)) for r in rejected.tolist()) / 3
    ) / 2
    for w in (0.0, 0.3, 1.0):
        got = reward_model.combined_loss(chosen, rejected, w).item()
        assert abs(got - ((1 - w) * bt + w * bce)) < 1e-5, (w, got)
    assert abs(bt - bce) > 0.1  # the weight matters


@pytest.mark.slow
def test_loss_both_trains_and_says_so(built):
    path = built(spec(loss="both", pointwise_weight=0.5, max_steps=2))["rm"]
    cfg = yaml.safe_load(path.read_text())
    write_pairs(cfg)
    reward_model.main(["--config", str(path), "--threads", "1"])
    m = json.loads(Path(cfg["outputs"]["metrics"]).read_text())
    assert m["loss_type"] == "both" and m["steps"] == 2 and m["loss"] is not None, m


@pytest.mark.parametrize(
    "params, words",
    [
        ({"head": "verifier", "loss": "pairwise"}, "`loss` is not read"),
        ({"loss": "pairwise", "pointwise_weight": 0.3}, "`pointwise_weight`"),
    ],
)
def test_fields_a_setting_does_not_read_are_refused(built, params, words):
    from compiler.spec.errors import SpecError

    with pytest.raises(SpecError) as err:
        built(spec(**params))
    assert words in str(err.value)
