"""The decoding rule on a real pretrained instruct model (SmolLM2-135M-Instruct): generate's sampling code and
eval's lm-eval path decode the same prompt, greedy, to the same text, and agree on what was cut off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.lib import answers
from runtime import eval as eval_stage
from runtime import generate
from runtime.lib.common import load_config, read_jsonl

QUESTIONS = 4
TASK = {
    "synthetic": {"min_steps": 1, "max_steps": 1, "max_number": 9, "distill_size": 4, "test_size": QUESTIONS},
    "system_prompt": "Solve the problem. End with a line '#### <number>'.",
}


@pytest.mark.slow  # two stages on a 135M model, 4 questions x 32 tokens: ~3 min on 2 busy cores
def test_generate_and_eval_decode_the_same_text(built, smol_model_dir):
    """The default rule (stop_at_answer on): same text, answers, cut-off flags and token counts."""
    new = 32
    configs = built(
        {
            "name": "same",
            "seed": 0,
            "task": TASK,
            "models": {"smol": {"path": str(smol_model_dir)}},
            "stages": {
                "samples": {
                    "kind": "generate",
                    "model": "smol",
                    "split": "test",
                    "temperatures": [0.0],
                    "max_new_tokens": new,
                    "batch_size": QUESTIONS,
                },
                "ev": {"kind": "eval", "model": "smol", "max_new_tokens": new, "batch_size": QUESTIONS},
            },
        }
    )
    generate.main(["--config", str(configs["samples"]), "--threads", "2"])
    eval_stage.main(["--config", str(configs["ev"]), "--threads", "2"])
    gen = {r["question_id"]: r for r in read_jsonl(load_config(configs["samples"], "generate").outputs["responses"])}
    out = Path(load_config(configs["ev"], "eval").out_dir)
    rows = read_jsonl(out / "samples.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(rows) == len(gen) == QUESTIONS
    for row in rows:
        g = gen[row["question_id"]]
        assert row["responses"] == [g["text"]] and row["answers"] == [g["answer"]]
        assert row["cut_off"] == [g["cut_off"]]
        if g["cut_off"]:  # a cut-off row used the whole budget
            assert g["num_tokens"] == new
    assert metrics["responses"] == QUESTIONS
    assert metrics["cut_off_share"] == sum(r["cut_off"] for r in gen.values()) / QUESTIONS
    assert metrics["no_answer_share"] == sum(r["answer"] is None for r in gen.values()) / QUESTIONS
    assert metrics["generated_tokens"] == sum(r["num_tokens"] for r in gen.values())
    for g in gen.values():  # nothing after the first complete answer line survives
        end = answers.answer_end(g["text"], "gsm8k")
        assert end is None or end == len(g["text"])
