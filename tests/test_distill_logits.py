"""runtime.distill_logits: the student moves toward the teacher's distribution; rows, tokenizers, resume.

One teacher is bootstrapped from gold once for the module (a few seconds); the
effect test measures the student's per-token KL(teacher || student) on held-out
questions before and after logit distillation, teacher-forced on gold solutions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import distill_logits
from runtime.lib import models
from runtime import sft
from runtime.lib import task
from runtime.lib.common import StageError, load_config, read_jsonl, write_jsonl

from conftest import REPO, build_spec, kill_at_first_checkpoint

TASK = {
    "synthetic": {
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 5,
        "gold_size": 300,
        "dev_size": 20,
        "distill_size": 48,
        "test_size": 40,
    }
}
TEACHER = {"init": {"hidden_size": 48, "num_layers": 2, "num_heads": 4, "max_length": 64}}
STUDENT = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}
HELD_OUT = 40  # test questions the divergence is measured on


def spec(stage: dict | None = None, seed: int = 0, extra: dict | None = None) -> dict:
    """A bootstrapped teacher, a generate stage (its responses are written by the tests) and the stage under test."""
    stages = {
        "teacher": {
            "kind": "sft",
            "model": "teacher_base",
            "data": "gold",
            "max_steps": 80,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "save_every_steps": 1000,
        },
        "samples": {"kind": "generate", "model": "teacher", "max_new_tokens": 16},
        "votes": {"kind": "pseudo_reward", "teacher": "samples"},
        "gkd": {
            "kind": "distill_logits",
            "teacher": "teacher",
            "model": "student",
            "data": "samples",
            "lmbda": 0.0,
            "beta": 0.0,
            "max_new_tokens": 16,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "max_steps": 60,
            "save_every_steps": 1000,
        }
        | (stage or {}),
        # the control: the same student, rows, steps and rate, trained on the sampled text alone
        "sft_same": {
            "kind": "sft",
            "model": "student",
            "data": "samples",
            "max_steps": 60,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "save_every_steps": 1000,
        },
    } | (extra or {})
    return {
        "name": "gkd",
        "seed": seed,
        "task": TASK,
        "models": {"teacher_base": TEACHER, "student": STUDENT},
        "stages": stages,
    }


def teacher_responses(cfg) -> list[dict]:
    """Stand-in teacher samples: the gold solutions of the distill questions (a perfect teacher's text)."""
    return [
        {
            "question_id": r["id"],
            "sample_id": 0,
            "temperature": 1.0,
            "seed": 0,
            "text": r["answer"],
            "answer": r["target"],
            "num_tokens": 0,
        }
        for r in task.gold(cfg.task, "distill", cfg.spec_seed)
    ]


def run_stage(configs: dict, stage: str = "gkd") -> None:
    cfg = load_config(configs[stage], "distill_logits")
    write_jsonl(cfg.inputs["data_responses"], teacher_responses(cfg))
    distill_logits.main(["--config", str(configs[stage]), "--threads", "1"])


def kl_to_teacher(cfg, student_path: str | None) -> float:
    """Mean per-token KL(teacher || student) over the completion tokens of held-out gold solutions."""
    import torch
    import torch.nn.functional as F

    teacher, tok = models.load_causal_lm(cfg.models["teacher"], cfg.task, cfg.spec_seed)
    ref = cfg.models["model"]
    if student_path:
        ref = ref.model_copy(update={"source": "path", "path": student_path})
    student, _ = models.load_causal_lm(ref, cfg.task, cfg.spec_seed)
    total, count = 0.0, 0
    for r in task.gold(cfg.task, "test", cfg.spec_seed)[:HELD_OUT]:
        msgs = task.messages(r, cfg.task)
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": r["answer"]}], tokenize=False)
        ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            lt = F.log_softmax(teacher(ids).logits[0, start - 1 : -1], -1)
            ls = F.log_softmax(student(ids).logits[0, start - 1 : -1], -1)
        total += float((lt.exp() * (lt - ls)).sum())
        count += lt.shape[0]
    return total / count


# ----------------------------------------------------------------------------- one real run
@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """The teacher, then logit distillation and (the control) sft of the same student on the same rows."""
    root = tmp_path_factory.mktemp("gkd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        configs = build_spec(spec(), root)
        sft.main(["--config", str(configs["teacher"]), "--threads", "1"])
        run_stage(configs)
        sft.main(["--config", str(configs["sft_same"]), "--threads", "1"])
        cfg = load_config(configs["gkd"], "distill_logits")
        out, sft_out = (
            str(root / load_config(configs[s], k).outputs["model"])
            for s, k in (("gkd", "distill_logits"), ("sft_same", "sft"))
        )
        kl = {"before": kl_to_teacher(cfg, None), "gkd": kl_to_teacher(cfg, out), "sft": kl_to_teacher(cfg, sft_out)}
        yield cfg, out, read_jsonl(Path(out) / "train_log.jsonl"), kl


@pytest.mark.slow
def test_student_moves_toward_the_teachers_distribution_more_than_sft_on_the_same_rows(distilled):
    """KL(teacher || student) per token on held-out questions, measured at spec seeds 0, 1, 2:
    untrained 3.30-3.32; after logit distillation 0.35-0.39 (an 8.5-9.4x drop; asked: 4x);
    after sft on the same rows and steps 0.40-0.43 (GKD / SFT = 0.88-0.93; asked: below 1).
    The control is principled, not a lucky crossing: with beta 0 GKD minimises exactly this
    divergence on these rows, while sft sees one sampled token per position."""
    _, _, _, kl = distilled
    assert kl["gkd"] < kl["before"] / 4, kl
    assert kl["gkd"] < kl["sft"], kl


@pytest.mark.slow
def test_loss_falls_and_the_model_folder_is_complete(distilled):
    cfg, out, log, _ = distilled
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0], losses
    card = (Path(out) / "README.md").read_text()
    assert "distill_logits" in card and "GKD" in card
    assert not (Path(cfg.out_dir) / "checkpoints").exists()
    assert (Path(cfg.out_dir) / "tensorboard").is_dir()


# ----------------------------------------------------------------------------- data and tokenizers
@pytest.mark.slow
def test_labels_select_only_agreeing_teacher_rows_and_foreign_ids_are_refused(built):
    cfg = load_config(built(spec({"data": "votes"}))["gkd"], "distill_logits")
    qs = task.questions(cfg.task, "distill", cfg.spec_seed)
    base = {"source": "samples", "temperature": 1.0, "answer": "3", "pseudo_label": "3", "agreement": 0.75}
    write_jsonl(
        cfg.inputs["data_labels"],
        [
            base | {"question_id": qs[0]["id"], "role": "teacher", "sample_id": 0, "text": "keep #### 3", "label": 1},
            base | {"question_id": qs[0]["id"], "role": "teacher", "sample_id": 1, "text": "wrong #### 4", "label": 0},
            base
            | {"question_id": qs[1]["id"], "role": "student", "sample_id": 0, "text": "student #### 3", "label": 1},
            base
            | {
                "question_id": qs[1]["id"],
                "role": "teacher",
                "sample_id": 1,
                "text": "cut #### 3\n####",
                "label": 1,
                "cut_off": True,
            },  # a ramble cut at max_new_tokens: left out, and counted
        ],
    )
    rows = distill_logits.training_rows(cfg)
    assert rows == [{"messages": task.messages(qs[0], cfg.task) + [{"role": "assistant", "content": "keep #### 3"}]}]
    record = json.loads((Path(cfg.out_dir) / task.TRAINING_DATA).read_text())
    assert record == {"rows": 1, "cut_off_dropped": 1, "keep_cut_off": False}
    write_jsonl(
        cfg.inputs["data_labels"],
        [base | {"question_id": "test-0", "role": "teacher", "sample_id": 0, "text": "x #### 3", "label": 1}],
    )
    with pytest.raises(StageError, match="not distill questions"):
        distill_logits.training_rows(cfg)


def test_the_compiler_refuses_an_init_student_for_a_loaded_teacher(tmp_path):
    folder = tmp_path / "hub_like_model"
    folder.mkdir()
    s = spec({"teacher": "loaded"})
    s["models"]["loaded"] = {"path": str(folder)}
    (tmp_path / "spec.yaml").write_text(__import__("yaml").safe_dump(s))
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "build", "spec.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "stages.gkd.teacher" in proc.stderr and "token by token" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_stage_refuses_tokenizers_that_differ(built):
    cfg = load_config(built(spec())["gkd"], "distill_logits")
    mine = models.build_tokenizer(cfg.task, cfg.spec_seed)
    other_task = cfg.task.model_copy(update={"synthetic": cfg.task.synthetic.model_copy(update={"max_number": 50})})
    other = models.build_tokenizer(other_task, cfg.spec_seed)
    distill_logits.check_same_tokenizer(cfg, mine, models.build_tokenizer(cfg.task, cfg.spec_seed))
    with pytest.raises(StageError, match="do not share a tokenizer"):
        distill_logits.check_same_tokenizer(cfg, mine, other)


# ----------------------------------------------------------------------------- resume, on-policy
@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_on_policy(built, capsys):
    """lmbda 1: every step samples from the student, so this also runs the on-policy path."""
    configs = built(spec({"max_steps": 40, "save_every_steps": 5, "lmbda": 1.0}))
    sft.main(["--config", str(configs["teacher"]), "--threads", "1"])
    cfg = load_config(configs["gkd"], "distill_logits")
    write_jsonl(cfg.inputs["data_responses"], teacher_responses(cfg))
    ckpts = Path(cfg.out_dir) / "checkpoints"
    kill_at_first_checkpoint("distill_logits", configs["gkd"], ckpts, timeout=120)
    assert not Path(cfg.outputs["model"]).exists()
    capsys.readouterr()
    distill_logits.main(["--config", str(configs["gkd"]), "--threads", "1"])
    resumed = [line for line in capsys.readouterr().err.splitlines() if "resuming from" in line]
    assert len(resumed) == 1
    step = int(resumed[0].rsplit("checkpoint-", 1)[1].split()[0])
    assert 5 <= step < 40 and step % 5 == 0
    assert max(r["step"] for r in read_jsonl(Path(cfg.outputs["model"]) / "train_log.jsonl")) == 40
    assert not ckpts.exists()
