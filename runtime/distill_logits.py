"""distill_logits: white-box distillation of the teacher's token distribution (TRL's GKD trainer).

sft copies the teacher's sampled text; this stage matches the teacher's whole
next-token distribution at every response position (generalized JSD, `beta`), on
the data stage's teacher responses or, with probability `lmbda` per step, on the
student's own samples of the same questions (on-policy). It reads no gold answer.
Teacher and student must share a tokenizer: that is checked before any weights
load. Checkpoints live beside the output so that a killed run resumes; the final
model is written atomically with its training log and model card.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.stages import DistillLogitsStage

from .lib import models, ranks
from .lib import task as taskdata
from .lib.checkpoints import resume_dir, train_or_load
from .lib.common import (
    StageError,
    atomic_write_json,
    hide_tied_weights_warning,
    log,
    progress_callback,
    start,
    torch_setup,
)
from .lib.tracking import tracking_args

LOGGING_STEPS = 5  # loss rows in train_log.jsonl: often enough to see a tiny run's curve


# ----------------------------------------------------------------------------- data
def training_rows(cfg: StageConfig) -> list[dict]:
    """Chat rows (question prompt + one response): the responses sft would train on (task.distilled_responses);
    the selection is recorded in the stage folder (task.TRAINING_DATA)."""
    keep = cfg.stage().keep_cut_off
    pairs, dropped = taskdata.distilled_responses(cfg, "distill_logits", keep)
    if ranks.is_main():
        atomic_write_json(
            Path(cfg.out_dir) / taskdata.TRAINING_DATA, taskdata.training_data_record(len(pairs), dropped, keep)
        )
    if dropped:
        log(f"left out {dropped} responses cut off at max_new_tokens (keep_cut_off: true keeps them)")
    if not pairs:
        source = cfg.input_or_none("data", "labels") or cfg.input("data", "responses")
        raise StageError(
            f"distill_logits stage {cfg.id!r}: no training rows in {source} "
            "(no agreeing teacher samples, all responses empty, or all cut off at max_new_tokens: "
            "raise the generate stage's max_new_tokens, or set keep_cut_off: true)"
        )
    return [{"messages": prompt + [{"role": "assistant", "content": text}]} for prompt, text in pairs]


# ----------------------------------------------------------------------------- tokenizers
def check_same_tokenizer(cfg: StageConfig, teacher_tok, student_tok) -> None:
    """GKD compares two distributions token id by token id: the vocabularies must be identical.

    The compiler refuses the mismatches it can see (an `init:` model against a loaded
    one, two local folders whose tokenizer.json differ); hub models are checked here,
    from their tokenizers alone, before any weights load.
    """
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv == sv:
        return
    differ = sorted(set(tv.items()) ^ set(sv.items()))
    t, s = cfg.models["teacher"], cfg.models["model"]
    raise StageError(
        f"teacher {t.name!r} ({len(tv)} tokens) and student {s.name!r} ({len(sv)} tokens) do not share "
        f"a tokenizer ({len(differ)} token/id pairs differ, e.g. {differ[:3]}); logit distillation "
        "compares the two distributions token by token. Use a student from the teacher's family, or "
        "distil through text instead (an sft stage on the teacher's samples)"
    )


# ----------------------------------------------------------------------------- trainer
def gkd_config(cfg: StageConfig, stage: DistillLogitsStage, device, dtype, out_dir):
    import torch
    from trl.experimental.gkd import GKDConfig

    return GKDConfig(
        output_dir=str(out_dir),
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps or -1,
        learning_rate=stage.learning_rate,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        max_length=stage.max_length,
        lmbda=stage.lmbda,
        beta=stage.beta,
        temperature=stage.temperature,
        max_new_tokens=stage.max_new_tokens,
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=stage.save_every_steps,
        save_total_limit=1,
        use_cpu=device.type == "cpu",
        seed=cfg.seed,
        **tracking_args(cfg),
        # In several processes each one's loss is the mean over its own response tokens (DDP averages the
        # gradients): TRL 1.12's GKD divides by the token count of ALL processes but, unlike the Trainer's own
        # loss, never scales back by their number, so loss and gradients came out 1/N (measured: 2 processes
        # logged exactly half the 1-process loss). With one process this setting changes nothing.
        average_tokens_across_devices=False,
        # recomputing activations saves GPU memory; on CPU it only costs time (and turns off the KV cache
        # of the on-policy samples)
        activation_checkpointing=device.type != "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
    )


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "distill_logits")
    device, dtype = torch_setup(cfg.seed, args.threads, stage.device, stage.precision)
    t_ref, s_ref = cfg.models["teacher"], cfg.models["model"]
    t_tok = models.load_tokenizer(t_ref, cfg.task, cfg.spec_seed)
    s_tok = models.load_tokenizer(s_ref, cfg.task, cfg.spec_seed)
    check_same_tokenizer(cfg, t_tok, s_tok)
    from datasets import Dataset
    from trl.experimental.gkd import GKDTrainer

    rows = training_rows(cfg)
    teacher, _ = models.load_causal_lm(t_ref, cfg.task, cfg.spec_seed, dtype)
    student, tok = models.load_causal_lm(s_ref, cfg.task, cfg.spec_seed, dtype, padding_side="left")
    log(
        f"{len(rows)} training rows from {stage.data!r}; teacher {t_ref.name!r}, student {s_ref.name!r}, "
        f"lmbda {stage.lmbda}, beta {stage.beta}"
    )
    ckpt = resume_dir(cfg)
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        processing_class=tok,
        args=gkd_config(cfg, stage, device, dtype, ckpt),
        train_dataset=Dataset.from_list(rows),
        callbacks=[progress_callback(cfg)],
    )
    hide_tied_weights_warning(trainer.model)  # a resume rightly finds no separate lm_head in a tied checkpoint
    t0 = time.perf_counter()
    model, state = train_or_load(trainer, ckpt)  # resumes from the last complete checkpoint, if any
    log(f"trained to step {state.global_step} in {time.perf_counter() - t0:.1f} s")
    if not ranks.main_alone():
        return
    models.save_model_dir(model, tok, cfg.outputs["model"], state.log_history, cfg, None, ranks.batch(trainer.args))
    shutil.rmtree(ckpt)  # done: a forced rerun starts fresh
    log(f"wrote {cfg.outputs['model']}")


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
