"""runtime.sft: it learns, stops on its rules, picks the right rows, resumes, and merges LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.lib import models
from runtime import sft
from runtime.lib import task
from runtime.lib.common import StageError, load_config, read_jsonl, write_jsonl

from conftest import build_spec, kill_at_first_checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

# max_number 5 keeps the arithmetic table small: a 64-wide model learns it in ~150 steps on one thread
TASK = {
    "synthetic": {
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 5,
        "gold_size": 300,
        "dev_size": 40,
        "distill_size": 32,
        "test_size": 64,
    }
}
SMALL = {"init": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "max_length": 64}}
TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}


def spec(stage: dict, model: dict = TINY, extra: dict | None = None) -> dict:
    stages = {"s": {"kind": "sft", "model": "m", "data": "gold"} | stage} | (extra or {})
    return {"name": "sft", "seed": 0, "task": TASK, "models": {"m": model}, "stages": stages}


def held_out_accuracy(model, tok, cfg) -> float:
    rows = task.gold(cfg.task, "test", cfg.spec_seed)
    return sft.dev_accuracy(model, tok, cfg.task, rows, sft.max_new_tokens(tok, rows))


# ----------------------------------------------------------------------------- one real training run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Bootstrap from gold until dev accuracy reaches 0.4 (or 400 steps); shared by the tests below."""
    root = tmp_path_factory.mktemp("sft_gold")
    stage = {
        "max_steps": 400,
        "learning_rate": 5e-3,
        "batch_size": 16,
        "stop_at_dev_accuracy": 0.4,
        "eval_every_steps": 25,
        "save_every_steps": 1000,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = build_spec(spec(stage, SMALL), root)["s"]
        sft.main(["--config", str(config), "--threads", "1"])
    cfg = load_config(config, "sft")
    out = root / cfg.outputs["model"]
    return cfg, out, read_jsonl(out / "train_log.jsonl")


def test_loss_falls(trained):
    _, _, log = trained
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) >= 5
    assert losses[-1] < 0.5 * losses[0]


def test_sft_model_beats_the_untrained_one_on_held_out_questions(trained):
    cfg, out, _ = trained
    ref = cfg.models["model"]
    base, tok = models.load_causal_lm(ref, cfg.task, cfg.spec_seed, padding_side="left")
    tuned, tuned_tok = models.load_causal_lm(
        ref.model_copy(update={"source": "path", "path": str(out)}), cfg.task, cfg.spec_seed, padding_side="left"
    )
    before, after = held_out_accuracy(base, tok, cfg), held_out_accuracy(tuned, tuned_tok, cfg)
    assert after >= before + 0.2, (before, after)


def test_stop_at_dev_accuracy_stops_early(trained):
    _, _, log = trained
    dev = [r for r in log if "dev_accuracy" in r]
    last_step = max(r["step"] for r in log)
    assert last_step < 400 and last_step % 25 == 0
    assert dev[-1]["step"] == last_step and dev[-1]["dev_accuracy"] >= 0.4
    assert all(r["dev_accuracy"] < 0.4 for r in dev[:-1])


# ----------------------------------------------------------------------------- data selection
def test_labels_select_only_agreeing_teacher_rows(built):
    extra = {
        "samples": {"kind": "generate", "model": "m", "max_new_tokens": 16},
        "votes": {"kind": "pseudo_reward", "teacher": "samples"},
    }
    config = built(spec({"data": "votes"}, extra=extra))["s"]
    cfg = load_config(config, "sft")
    qs = task.questions(cfg.task, "distill", cfg.spec_seed)
    base = {"source": "samples", "temperature": 1.0, "answer": "3", "pseudo_label": "3", "agreement": 0.75}
    labels = [
        base | {"question_id": qs[0]["id"], "role": "teacher", "sample_id": 0, "text": "keep one #### 3", "label": 1},
        base | {"question_id": qs[0]["id"], "role": "teacher", "sample_id": 1, "text": "wrong #### 4", "label": 0},
        base | {"question_id": qs[1]["id"], "role": "student", "sample_id": 0, "text": "student #### 3", "label": 1},
        base | {"question_id": qs[1]["id"], "role": "teacher", "sample_id": 2, "text": "keep two #### 3", "label": 1},
        base | {"question_id": qs[1]["id"], "role": "teacher", "sample_id": 3, "text": "keep three #### 3", "label": 1},
    ]
    write_jsonl(cfg.inputs["data_labels"], labels)
    rows = sft.training_rows(cfg, cfg.stage())
    assert [r["completion"] for r in rows] == [
        [{"role": "assistant", "content": t}] for t in ("keep one #### 3", "keep two #### 3", "keep three #### 3")
    ]
    assert [r["prompt"] for r in rows] == [task.messages(q, cfg.task) for q in (qs[0], qs[1], qs[1])]
    assert all("answer" not in str(r["prompt"]) for r in rows)


def test_responses_keep_non_empty_rows_and_no_rows_is_a_clear_error(built):
    extra = {"samples": {"kind": "generate", "model": "m", "max_new_tokens": 16}}
    cfg = load_config(built(spec({"data": "samples"}, extra=extra))["s"], "sft")
    qs = task.questions(cfg.task, "distill", cfg.spec_seed)
    row = {"sample_id": 0, "temperature": 1.0, "seed": 1, "answer": None, "num_tokens": 3}
    write_jsonl(
        cfg.inputs["data_responses"],
        [
            row | {"question_id": qs[0]["id"], "text": "2 + 1 = 3. #### 3"},
            row | {"question_id": qs[1]["id"], "text": "  "},
        ],
    )
    rows = sft.training_rows(cfg, cfg.stage())
    assert len(rows) == 1 and rows[0]["completion"][0]["content"] == "2 + 1 = 3. #### 3"
    write_jsonl(cfg.inputs["data_responses"], [row | {"question_id": qs[1]["id"], "text": ""}])
    with pytest.raises(StageError, match="no training rows"):
        sft.training_rows(cfg, cfg.stage())


def test_cut_off_responses_are_left_out_unless_kept_and_the_count_is_recorded(built):
    """A response that ran to max_new_tokens is not training data by default; rows from older runs
    (no `cut_off` field) count as not cut off; the stage folder records how many were left out."""
    extra = {"samples": {"kind": "generate", "model": "m", "max_new_tokens": 16}}
    for keep in (False, True):
        cfg = load_config(built(spec({"data": "samples", "keep_cut_off": keep}, extra=extra))["s"], "sft")
        qs = task.questions(cfg.task, "distill", cfg.spec_seed)
        row = {"sample_id": 0, "temperature": 1.0, "seed": 1, "answer": None, "num_tokens": 3}
        write_jsonl(
            cfg.inputs["data_responses"],
            [
                row | {"question_id": qs[0]["id"], "text": "2 + 1 = 3. #### 3", "cut_off": False},
                row | {"question_id": qs[1]["id"], "text": "#### 4\n#### 4\n#### 4\n####", "cut_off": True},
                row | {"question_id": qs[2]["id"], "text": "an older run's row #### 5"},
            ],
        )
        rows = sft.training_rows(cfg, cfg.stage())
        texts = [r["completion"][0]["content"] for r in rows]
        record = json.loads((Path(cfg.out_dir) / task.TRAINING_DATA).read_text())
        if keep:
            assert len(texts) == 3 and record == {"rows": 3, "cut_off_dropped": 0, "keep_cut_off": True}
        else:
            assert texts == ["2 + 1 = 3. #### 3", "an older run's row #### 5"]
            assert record == {"rows": 2, "cut_off_dropped": 1, "keep_cut_off": False}
    cfg = load_config(built(spec({"data": "samples"}, extra=extra))["s"], "sft")
    write_jsonl(cfg.inputs["data_responses"], [row | {"question_id": qs[1]["id"], "text": "####", "cut_off": True}])
    with pytest.raises(StageError, match="keep_cut_off: true"):
        sft.training_rows(cfg, cfg.stage())


# ----------------------------------------------------------------------------- resume, LoRA, time limit
def test_killed_run_resumes_from_its_checkpoint(built, capsys):
    config = built(spec({"max_steps": 150, "batch_size": 8, "save_every_steps": 5}))["s"]
    ckpts = Path("runs/sft/s/checkpoints")
    kill_at_first_checkpoint("sft", config, ckpts, timeout=90)
    assert not Path("runs/sft/s/model").exists()

    sft.main(["--config", str(config), "--threads", "1"])
    err = capsys.readouterr().err
    resumed = [line for line in err.splitlines() if "resumed from checkpoint step" in line]
    assert len(resumed) == 1, err[-3000:]
    step = int(resumed[0].split("step ")[1].split()[0])
    assert 5 <= step < 150 and step % 5 == 0
    log = read_jsonl("runs/sft/s/model/train_log.jsonl")
    assert max(r["step"] for r in log) == 150
    # the killed run's loss rows came back with its checkpoint: the curve starts at step 1, not at `step`
    assert min(r["step"] for r in log if "loss" in r) == 1
    assert not ckpts.exists()


def test_max_time_fails_loudly_and_never_shortens_training(built):
    """A time limit is a guard: past it the job fails with a message and writes no model (no load-dependent result)."""
    config = built(spec({"max_steps": 500, "max_time_s": 0.001}))["s"]
    with pytest.raises(StageError) as exc:
        sft.main(["--config", str(config), "--threads", "1"])
    assert "ran past max_time_s" in str(exc.value) and "never shortens training" in str(exc.value)
    assert not Path("runs/sft/s/model").exists()


def test_lora_is_merged(built):
    from transformers import AutoModelForCausalLM

    config = built(spec({"max_steps": 2, "lora": {"r": 4, "alpha": 8}}))["s"]
    sft.main(["--config", str(config), "--threads", "1"])
    out = Path("runs/sft/s/model")
    assert not (out / "adapter_config.json").exists()
    log = read_jsonl(out / "train_log.jsonl")
    assert max(r["step"] for r in log) == 2
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name in merged.state_dict())
    base, _ = models.load_causal_lm(load_config(config, "sft").models["model"], load_config(config, "sft").task, 0)
    changed = [n for n, p in merged.state_dict().items() if not p.equal(base.state_dict()[n])]
    assert changed, "the merged LoRA update left every weight unchanged"
