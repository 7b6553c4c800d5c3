"""sft: supervised fine-tuning with TRL's SFTTrainer, loss on the completion only.

Three data sources: `gold` (the demo-teacher bootstrap: the one training stage
that reads gold answers, plus gold dev for early stopping), a pseudo_reward stage
(every teacher response that agrees with the majority vote) or a generate stage
(every non-empty response). Checkpoints live beside the output so that a killed
run resumes; the final model is written atomically, merged if LoRA was used.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.stages import SftStage

from .lib import models, ranks
from .lib import task as taskdata
from .lib.checkpoints import last_checkpoint, resume_dir
from .lib.common import (
    StageError,
    atomic_write_json,
    hide_tied_weights_warning,
    log,
    progress_callback,
    start,
    torch_setup,
)
from .lib.sampling import greedy_accuracy
from .lib.tracking import tracking_args

DEV_BATCH = 64  # dev questions per greedy generate call
LOGGING_STEPS = 5  # loss rows in train_log.jsonl: often enough to see a tiny run's curve


# ----------------------------------------------------------------------------- data
def _row(messages: list[dict], completion: str) -> dict:
    """A prompt-completion conversational row: TRL masks the prompt out of the loss."""
    return {"prompt": messages, "completion": [{"role": "assistant", "content": completion}]}


def training_rows(cfg: StageConfig, stage: SftStage) -> list[dict]:
    """The rows this stage trains on, chosen by where its data comes from."""
    if stage.data == "gold":
        gold = taskdata.gold(cfg.task, "gold", cfg.spec_seed)
        rows = [_row(taskdata.messages(r, cfg.task), r["answer"]) for r in gold]
    else:
        pairs, dropped = taskdata.distilled_responses(cfg, "sft", stage.keep_cut_off)
        rows = [_row(prompt, text) for prompt, text in pairs]
        if ranks.is_main():
            atomic_write_json(
                Path(cfg.out_dir) / taskdata.TRAINING_DATA,
                taskdata.training_data_record(len(rows), dropped, stage.keep_cut_off),
            )
        if dropped:
            log(f"left out {dropped} responses cut off at max_new_tokens (keep_cut_off: true keeps them)")
    if not rows:
        raise StageError(
            f"sft stage {cfg.id!r}: no training rows from data {stage.data!r} "
            "(no agreeing teacher samples, all responses empty, or all cut off at max_new_tokens: "
            "raise the generate stage's max_new_tokens, or set keep_cut_off: true)"
        )
    return rows


# ----------------------------------------------------------------------------- dev accuracy
def dev_accuracy(model, tok, task, dev: list[dict], max_new_tokens: int) -> float:
    """Greedy accuracy on gold dev questions, answers read as everywhere else (runtime.lib.answers).

    In several processes each greedily answers its share (every N-th question) and the hits are
    summed: every process gets the same number, so all stop at the same step.
    """
    mine = dev[ranks.rank() :: ranks.world()]
    hits = round(greedy_accuracy(model, tok, task, mine, max_new_tokens, DEV_BATCH) * len(mine)) if mine else 0
    return ranks.total([hits])[0] / len(dev)


def max_new_tokens(tok, dev: list[dict]) -> int:
    """Room for the longest gold dev answer, plus a little slack."""
    return max((len(tok(r["answer"], add_special_tokens=False)["input_ids"]) for r in dev), default=0) + 8


class TimeLimitExceeded(Exception):
    """Training ran past max_time_s: the job fails, it never stops early with a result."""


def stop_rules(stage: SftStage, dev: list[dict], gen_tok, task):
    """A TrainerCallback for the spec's stop rules: a dev-accuracy target, and max_time_s as a failure.

    Training stops only on steps, epochs or dev accuracy, so a finished run computes
    the same model on a quiet or a loaded machine. max_time_s is a guard, not a stop
    rule: past it the job fails (checkpoints stay beside the output for a resume).
    Dev accuracy goes into the trainer's log history, so it is checkpointed with
    the run and lands in train_log.jsonl.
    """
    from transformers import TrainerCallback

    budget = max_new_tokens(gen_tok, dev)

    class StopRules(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.monotonic()  # max_time_s counts this process's training time

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if stage.max_time_s and time.monotonic() - self.t0 >= stage.max_time_s:
                raise TimeLimitExceeded(
                    f"step {state.global_step}: training ran past max_time_s ({stage.max_time_s:g} s)"
                )
            if dev and state.global_step % stage.eval_every_steps == 0:
                acc = dev_accuracy(model, gen_tok, task, dev, budget)
                state.log_history.append({"step": state.global_step, "dev_accuracy": acc})
                log(f"step {state.global_step}: dev accuracy {acc:.3f} ({len(dev)} questions)")
                if stage.stop_at_dev_accuracy is not None and acc >= stage.stop_at_dev_accuracy:
                    log(f"dev accuracy target {stage.stop_at_dev_accuracy} reached, stopping")
                    control.should_training_stop = True

    return StopRules()


# ----------------------------------------------------------------------------- trainer
def sft_config(cfg: StageConfig, stage: SftStage, device, dtype, out_dir: Path):
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps or -1,
        learning_rate=stage.learning_rate,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        max_length=stage.max_length,
        logging_steps=LOGGING_STEPS,
        logging_first_step=True,
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=stage.save_every_steps,
        save_total_limit=1,
        use_cpu=device.type == "cpu",
        seed=cfg.seed,
        **tracking_args(cfg),
        # recomputing activations saves GPU memory; on CPU it only costs time
        activation_checkpointing=device.type != "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
    )


def lora_config(stage: SftStage):
    if stage.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=stage.lora.r,
        lora_alpha=stage.lora.alpha,
        lora_dropout=stage.lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "sft")
    device, dtype = torch_setup(cfg.seed, args.threads, stage.device, stage.precision)
    from datasets import Dataset
    from trl import SFTTrainer

    rows = training_rows(cfg, stage)
    ref = cfg.models["model"]
    model, tok = models.load_causal_lm(ref, cfg.task, cfg.spec_seed, dtype, padding_side="right")
    # dev answers are read only when bootstrapping a teacher from gold (the compiler enforces it)
    dev = taskdata.gold(cfg.task, "dev", cfg.spec_seed) if stage.data == "gold" else []
    gen_tok = models.load_tokenizer(ref, cfg.task, cfg.spec_seed, padding_side="left")
    log(f"{len(rows)} training rows from {stage.data!r}" + (f", {len(dev)} dev questions" if dev else ""))
    ckpt = resume_dir(cfg)
    resume = last_checkpoint(ckpt)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, stage, device, dtype, ckpt),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora_config(stage),
        callbacks=[stop_rules(stage, dev, gen_tok, cfg.task), progress_callback(cfg)],
    )
    if resume:
        hide_tied_weights_warning(trainer.model)
        log(f"resumed from checkpoint step {resume.rsplit('-', 1)[-1]} ({resume})")
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume)
    except TimeLimitExceeded as exc:
        raise StageError(
            f"sft stage {cfg.id!r} failed: {exc}. A time limit never shortens training (the result "
            "would depend on machine load); stop on max_steps, epochs or stop_at_dev_accuracy, "
            "or raise max_time_s. Checkpoints are kept: a rerun resumes."
        ) from None
    history = trainer.state.log_history
    log(f"trained to step {trainer.state.global_step} in {time.perf_counter() - t0:.1f} s")
    step = trainer.state.global_step
    if dev and not any(r.get("dev_accuracy") is not None and r["step"] == step for r in history):
        # the final model's dev accuracy, for the record
        acc = dev_accuracy(trainer.model, gen_tok, cfg.task, dev, max_new_tokens(gen_tok, dev))
        history.append({"step": step, "dev_accuracy": acc})
        log(f"final dev accuracy {acc:.3f}")
    if not ranks.main_alone():
        return
    final = trainer.model.merge_and_unload() if stage.lora is not None else trainer.model
    dev_acc = [r["dev_accuracy"] for r in history if r.get("dev_accuracy") is not None]
    result = {"greedy dev accuracy": dev_acc[-1]} if dev_acc else None
    models.save_model_dir(final, tok, cfg.outputs["model"], history, cfg, result, ranks.batch(trainer.args))
    shutil.rmtree(ckpt)  # done: a forced rerun starts fresh
    log(f"wrote {cfg.outputs['model']}")


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
