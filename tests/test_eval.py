"""Eval stage: lm-eval on the rendered local task, scored like the rest of the pipeline."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from runtime.lib import answers
from runtime.lib import task as taskdata
from runtime.lib.common import StageError, read_jsonl

TASK = {
    "synthetic": {
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 9,
        "gold_size": 600,
        "dev_size": 0,
        "distill_size": 8,
        "test_size": 24,
    }
}
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}


def spec(models: dict, stages: dict, **task) -> dict:
    return {"name": "ev", "seed": 0, "task": TASK | task, "models": models, "stages": stages}


def run(config: Path) -> tuple[dict, list[dict]]:
    from runtime import eval as stage

    stage.main(["--config", str(config), "--threads", "1"])
    out = Path(yaml.safe_load(config.read_text())["out_dir"])
    return json.loads((out / "metrics.json").read_text()), read_jsonl(out / "samples.jsonl")


def gold_rows(config: Path) -> list[dict]:
    from compiler.spec.contract import StageConfig

    cfg = StageConfig.model_validate(yaml.safe_load(config.read_text()))
    return taskdata.gold(cfg.task, "test", cfg.spec_seed)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A tiny Llama trained on the gold split until it answers some test questions (~250 steps, 1 thread).

    Trained on whole chat-formatted solutions ending in EOS, so it also learns to stop.
    """
    import torch

    from compiler.spec.contract import ModelRef
    from compiler.spec.schema import InitModel, TaskSpec
    from runtime.lib import models

    torch.set_num_threads(1)
    task = TaskSpec.model_validate(TASK)
    ref = ModelRef(
        name="m", source="init", base="m", init=InitModel(hidden_size=64, num_layers=1, num_heads=4, max_length=64)
    )
    model, tok = models.load_causal_lm(ref, task, 0, padding_side="right")
    rows = taskdata.gold(task, "gold", 0)
    texts = [
        tok.apply_chat_template(
            taskdata.messages(r, task) + [{"role": "assistant", "content": r["answer"]}], tokenize=False
        )
        for r in rows
    ]
    enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        idx = torch.randint(len(rows), (32,), generator=gen)
        model(
            input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=labels[idx]
        ).loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("trained") / "model"
    models.save(model.eval(), tok, path)
    return path


@pytest.mark.slow
def test_untrained_init_model_end_to_end(built, monkeypatch):
    """Random init model: contract shapes, gold targets, and lm-eval's prompts == generate's (one BOS)."""
    from runtime.lib import eval_lm
    from runtime.lib import models

    HFLM = eval_lm.ruled_hflm()  # lm-eval's HFLM under the project's decoding rule
    seen = []
    original = HFLM._model_generate

    def spy(self, context, max_length, stop, **kw):
        seen.extend(ids[m.bool()].tolist() for ids, m in zip(context, kw["attention_mask"]))
        return original(self, context, max_length, stop, **kw)

    monkeypatch.setattr(HFLM, "_model_generate", spy)
    configs = built(
        spec(
            {"rand": {"init": TINY}},
            {"ev_rand": {"kind": "eval", "model": "rand", "max_new_tokens": 8, "batch_size": 7}},
            system_prompt="How many?",
        )
    )
    metrics, rows = run(configs["ev_rand"])
    gold = gold_rows(configs["ev_rand"])
    assert metrics["n"] == len(gold) == 24 and len(rows) == 24
    assert 0.0 <= metrics["accuracy"] <= 1.0 and set(metrics["metrics"]) == {"greedy", "greedy_strict"}
    assert [r["question_id"] for r in rows] == [g["id"] for g in gold]
    assert [r["target"] for r in rows] == [g["target"] for g in gold]
    assert all(len(r["responses"]) == 1 == len(r["answers"]) == len(r["cut_off"]) for r in rows)
    assert metrics["responses"] == 24
    assert metrics["cut_off_share"] == sum(c for r in rows for c in r["cut_off"]) / 24 > 0  # random: rarely stops
    assert metrics["no_answer_share"] == sum(a is None for r in rows for a in r["answers"]) / 24
    assert metrics["lm_eval"]["lm_eval_version"] and len(metrics["lm_eval"]["task_hash"]) == 64

    from compiler.spec.schema import TaskSpec

    task = TaskSpec.model_validate(TASK | {"system_prompt": "How many?"})
    tok = models.build_tokenizer(task, 0)
    expected = [
        tok(
            tok.apply_chat_template(taskdata.messages(g, task), add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        for g in gold
    ]
    assert sorted(seen) == sorted(expected)  # the chat template with the system prompt
    assert all(ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 for ids in seen)


@pytest.mark.slow
def test_scoring_agrees_with_extracted_answers(built, trained_dir):
    """A trained local model: correct == (answers.extract == target) on every row, accuracy == mean(correct)."""
    configs = built(
        spec(
            {"local": {"path": str(trained_dir)}},
            {"ev_local": {"kind": "eval", "model": "local", "max_new_tokens": 32, "batch_size": 8}},
        )
    )
    metrics, rows = run(configs["ev_local"])
    assert all(r["correct"] == (r["answers"][0] == r["target"]) for r in rows)
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert metrics["accuracy"] > 0  # it really answers some questions
    assert metrics["lm_eval"]["model_args"]["pretrained"] == str(trained_dir.resolve())
    # it stops at EOS: answers end with "#### N" although 32 tokens would allow more text
    assert sum(bool(re.search(r"#### \d+$", r["responses"][0])) for r in rows) >= len(rows) // 2


@pytest.mark.slow
def test_sampled_eval_reports_single_and_majority(built, trained_dir):
    configs = built(
        spec(
            {"local": {"path": str(trained_dir)}},
            {
                "ev_vote": {
                    "kind": "eval",
                    "model": "local",
                    "samples": 4,
                    "temperature": 1.0,
                    "max_new_tokens": 32,
                    "batch_size": 16,
                }
            },
        )
    )
    metrics, rows = run(configs["ev_vote"])
    assert set(metrics["metrics"]) == {"single", "majority", "single_strict", "majority_strict"}
    assert metrics["accuracy"] == metrics["metrics"]["single"]["accuracy"]
    strict = sum(answers.same(answers.extract_strict(r["responses"][0], "gsm8k"), r["target"]) for r in rows)
    assert metrics["metrics"]["single_strict"]["accuracy"] == pytest.approx(strict / len(rows))
    assert metrics["metrics"]["single_strict"]["accuracy"] <= metrics["accuracy"]  # strict reads a subset
    assert all(len(r["responses"]) == 4 == len(r["answers"]) for r in rows)
    assert len({tuple(r["responses"]) for r in rows if len(set(r["responses"])) > 1}) > 0  # really sampled
    for r in rows:
        assert r["correct"] == (r["answers"][0] == r["target"])
        assert r["majority_correct"] == answers.same(answers.vote(r["answers"])[0], r["target"])
    assert metrics["metrics"]["majority"]["accuracy"] == pytest.approx(
        sum(r["majority_correct"] for r in rows) / len(rows)
    )


@pytest.mark.slow
def test_local_directory_matches_stage_output(built, trained_dir):
    """The same weights given as a `path:` model and as an sft stage's output give the same eval."""
    configs = built(
        spec(
            {"local": {"path": str(trained_dir)}, "base": {"init": TINY}},
            {
                "tuned": {"kind": "sft", "model": "base", "data": "gold"},
                "ev_path": {"kind": "eval", "model": "local", "max_new_tokens": 32, "limit": 10},
                "ev_stage": {"kind": "eval", "model": "tuned", "max_new_tokens": 32, "limit": 10},
            },
        )
    )
    stage_model = Path(yaml.safe_load(configs["ev_stage"].read_text())["inputs"]["model"])
    shutil.copytree(trained_dir, stage_model)  # stands in for the sft stage's output
    by_path, rows_path = run(configs["ev_path"])
    by_stage, rows_stage = run(configs["ev_stage"])
    assert (by_path["model"], by_stage["model"]) == ("local", "tuned")
    assert by_path["n"] == by_stage["n"] == 10
    assert by_path["accuracy"] == by_stage["accuracy"]
    assert rows_path == rows_stage


@pytest.mark.slow
def test_prompt_that_would_be_truncated_is_refused(built):
    """lm-eval would silently cut the prompt's start (and its BOS): the stage refuses before running."""
    from runtime import eval as stage

    from compiler.spec.errors import SpecError

    short = TINY | {"max_length": 32}
    too_long = spec({"short": {"init": short}}, {"ev_short": {"kind": "eval", "model": "short", "max_new_tokens": 16}})
    with pytest.raises(
        SpecError,
        match=r"stages.ev_short.max_new_tokens: the longest prompt \(synthetic test "
        r"question test-\d+\) has \d+ tokens; with max_new_tokens 16",
    ):
        built(too_long)  # an init model's prompt lengths are known at validate
    # the stage's own check stands behind it (hub models are only measured there): edit the built config
    configs = built(
        spec({"short": {"init": short}}, {"ev_short": {"kind": "eval", "model": "short", "max_new_tokens": 4}})
    )
    config = yaml.safe_load(configs["ev_short"].read_text())
    config["params"]["max_new_tokens"] = 16
    configs["ev_short"].write_text(yaml.safe_dump(config))
    from runtime.lib.context import ContextOverflow

    with pytest.raises(ContextOverflow, match="max_new_tokens 16 that is .*32-token context"):
        stage.main(["--config", str(configs["ev_short"]), "--threads", "1"])


@pytest.mark.slow
def test_hub_task_refuses_majority_vote(built):
    """samples > 1 needs the rendered local task (its majority filter): refused at build time."""
    from compiler.spec.errors import SpecError

    with pytest.raises(SpecError, match="samples > 1"):
        built(
            spec(
                {"rand": {"init": TINY}},
                {"ev_vote": {"kind": "eval", "model": "rand", "hub_task": "gsm8k", "samples": 2}},
            )
        )


@pytest.mark.slow  # lm-eval indexes its ~14k bundled task files first: 25-50 s on 2 busy cores
def test_hub_task_offline_fails_clearly(built, monkeypatch):
    """hub_task goes to lm-eval's own task by name; with no network the stage says what to do."""
    from runtime import eval as stage

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    configs = built(
        spec({"rand": {"init": TINY}}, {"ev_hub": {"kind": "eval", "model": "rand", "hub_task": "gsm8k", "limit": 2}})
    )
    with pytest.raises(StageError, match="hub_task 'gsm8k'.*network access"):
        stage.main(["--config", str(configs["ev_hub"]), "--threads", "1"])
    assert not Path("runs/ev/ev_hub/metrics.json").exists()


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("{root}/runs/x/sft/model", "runs/x/sft/model"),
        ("{cache}/models/gguf-v1-abc", "$DISTILLC_CACHE/models/gguf-v1-abc"),
        ("org/hub-model", "org/hub-model"),
    ],
)
def test_metrics_record_model_folders_without_the_absolute_folder(tmp_path, monkeypatch, given, recorded):
    """metrics.json names the model lm-eval loaded by a path that does not change with the run's folder."""
    from runtime.eval import portable

    cache = tmp_path / "elsewhere" / "cache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLC_CACHE", str(cache))
    args = {"pretrained": given.format(root=tmp_path, cache=cache), "dtype": "float32"}
    assert portable(args) == {"pretrained": recorded, "dtype": "float32"}
