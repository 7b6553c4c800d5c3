"""reward_model: a scalar-head model trained on the pseudo-labels (no gold).

pairwise: TRL RewardTrainer, Bradley-Terry loss on (chosen, rejected) pairs. both (the
paper's, the default): the same pairs, Bradley-Terry plus a weighted binary cross-entropy
of each side's score on its label. pointwise: binary cross-entropy of the scalar on each response's 0/1 label,
through a small Trainer subclass, because RewardTrainer only takes pairs and the
built-in num_labels=1 loss is MSE, which would not give a logit-scale reward.

Questions (not pairs) are held out, so that no held-out pair shares a prompt with
a training pair; both losses hold out the same questions and are scored the same
way: pairwise accuracy, score(chosen) > score(rejected).
"""

from __future__ import annotations

import random
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.stages import RewardModelStage

from .lib import models, ranks, verifier
from .lib import task as taskdata
from .lib.checkpoints import resume_dir, train_or_load
from .lib.common import (
    StageError,
    atomic_write_json,
    derive_seed,
    log,
    progress_callback,
    read_jsonl,
    start,
    torch_setup,
    write_jsonl,
)
from .lib.reward_scoring import scores
from .lib.tracking import tracking_args

CHECKPOINT_EVERY = 0.2  # a fraction of training: at most ~5 checkpoints, one kept on disk


# ----------------------------------------------------------------------------- training log
def train_log(state) -> list[dict]:
    """One row per logging step ({"step", "loss", ...}), from the trainer's own history."""
    return [{"step": row["step"], **row} for row in state.log_history if "loss" in row]


# ----------------------------------------------------------------------------- data
def split_questions(qids, fraction: float, seed: int) -> tuple[set, set]:
    """(train, held-out) question ids: a seeded shuffle, at least one on each side when possible."""
    qids = sorted(set(qids))
    random.Random(derive_seed(seed, "reward_model", "holdout")).shuffle(qids)
    n = min(max(1, round(fraction * len(qids))), len(qids) - 1) if len(qids) >= 2 else 0
    return set(qids[n:]), set(qids[:n])


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def preference_rows(pairs: list[dict], prompts: dict) -> list[dict]:
    """Conversational rows as RewardTrainer reads them."""
    return [
        {"prompt": prompts[p["question_id"]], "chosen": assistant(p["chosen"]), "rejected": assistant(p["rejected"])}
        for p in pairs
    ]


def pointwise_rows(labels: list[dict], prompts: dict, tok, max_length: int) -> list[dict]:
    rows = []
    for r in labels:
        text = tok.apply_chat_template(prompts[r["question_id"]] + assistant(r["text"]), tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_length:  # as RewardTrainer does: drop, never cut off the scored last token
            rows.append({"input_ids": ids, "labels": float(r["label"])})
    return rows


# ----------------------------------------------------------------------------- training
def trainer_args(cfg: StageConfig, st: RewardModelStage, device, dtype, ckpt: Path) -> dict:
    import torch

    return dict(
        output_dir=str(ckpt),
        num_train_epochs=st.epochs,
        max_steps=st.max_steps or -1,
        learning_rate=st.learning_rate,
        per_device_train_batch_size=st.batch_size,
        logging_steps=0.05,
        save_strategy="steps",
        save_steps=CHECKPOINT_EVERY,
        save_total_limit=1,
        use_cpu=device.type == "cpu",
        seed=cfg.seed,
        data_seed=cfg.seed,
        **tracking_args(cfg),
        # TRL's RewardConfig turns recomputation on by default: it saves GPU memory, on CPU it only costs time
        activation_checkpointing=device.type != "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        disable_tqdm=True,
    )


def pairwise_trainer(model, tok, rows, args: dict, max_length: int):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    return RewardTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
        args=RewardConfig(max_length=max_length, **args),
    )


def combined_loss(chosen, rejected, weight: float):
    """loss: both (the paper's weighted loss): (1 - weight) * Bradley-Terry on the pair + weight * binary
    cross-entropy of each side's score on its label (chosen 1, rejected 0), both as batch means."""
    import torch
    import torch.nn.functional as F

    pairwise = -F.logsigmoid(chosen - rejected).mean()
    pointwise = (
        F.binary_cross_entropy_with_logits(chosen, torch.ones_like(chosen))
        + F.binary_cross_entropy_with_logits(rejected, torch.zeros_like(rejected))
    ) / 2
    return (1 - weight) * pairwise + weight * pointwise


def both_trainer(model, tok, rows, args: dict, max_length: int, weight: float):
    """RewardTrainer's data path (pairs, chosen stacked over rejected) with the combined loss."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    class BothTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            inputs["use_cache"] = False
            outputs = model(**inputs)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = combined_loss(chosen, rejected, weight)
            return (loss, outputs) if return_outputs else loss

    return BothTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
        args=RewardConfig(max_length=max_length, **args),
    )


def pointwise_trainer(model, tok, rows, args: dict):
    import torch.nn.functional as F
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    class PointwiseTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels").float()
            outputs = model(**inputs)
            loss = F.binary_cross_entropy_with_logits(outputs.logits.squeeze(-1), labels)
            return (loss, outputs) if return_outputs else loss

    return PointwiseTrainer(
        model=model,
        processing_class=tok,
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorWithPadding(tok),
        args=TrainingArguments(**args),
    )


def pair_hits(model, tok, rows: list[dict], st: RewardModelStage) -> list[bool]:
    """Per pair: does the chosen response score higher than the rejected one?"""
    if not rows:
        return []
    chosen = scores(model, tok, [r["prompt"] + r["chosen"] for r in rows], st.batch_size, st.max_length)
    rejected = scores(model, tok, [r["prompt"] + r["rejected"] for r in rows], st.batch_size, st.max_length)
    return [c > r for c, r in zip(chosen, rejected)]


def pair_accuracy(model, tok, rows: list[dict], st: RewardModelStage) -> float | None:
    hits = pair_hits(model, tok, rows, st)
    return sum(hits) / len(hits) if hits else None


def held_out_by_kind(model, tok, pairs: list[dict], prompts: dict, labels: list[dict], st: RewardModelStage) -> dict:
    """Held-out accuracy per pair kind ("teacher>student", "student>student").

    Teacher-vs-student pairs can be told apart by style alone; student-vs-student
    pairs only by the answer: their accuracy is the label-free check that the model
    ranks the student's own right answers above its wrong ones.
    """
    role = {r["source"]: r["role"] for r in labels}
    kinds: dict[str, list[dict]] = {}
    for p in pairs:
        kinds.setdefault(f"{role.get(p['chosen_source'], '?')}>{role.get(p['rejected_source'], '?')}", []).append(p)
    out = {}
    for kind, group in sorted(kinds.items()):
        hits = pair_hits(model, tok, preference_rows(group, prompts), st)
        out[kind] = {"pairs": len(group), "share": len(group) / len(pairs), "accuracy": sum(hits) / len(hits)}
    return out


def score_responses(model, tok, cfg: StageConfig, st: RewardModelStage) -> list[dict]:
    """The trained model's score of every response of the `score` stage (label-free: no gold read here)."""
    if cfg.input_or_none("score", "responses") is None:
        return []
    prompts = {
        q["id"]: taskdata.messages(q, cfg.task)
        for split in ("distill", "test")
        for q in taskdata.questions(cfg.task, split, cfg.spec_seed)
    }
    rows = [r for r in read_jsonl(cfg.input("score", "responses")) if r["question_id"] in prompts]
    values = scores(
        model, tok, [prompts[r["question_id"]] + assistant(r["text"]) for r in rows], st.batch_size, st.max_length
    )
    return [
        {"question_id": r["question_id"], "sample_id": r["sample_id"], "answer": r["answer"], "score": v}
        for r, v in zip(rows, values)
    ]


def loss_type(st) -> str:
    return "verifier" if st.head == "verifier" else st.loss


def make_trainer(cfg, st, hp: dict, train_q: set, train_pairs: list[dict], labels: list[dict], prompts: dict):
    """(model, tokenizer, trainer) for the stage's head and loss."""
    ref = cfg.models["model"]
    if st.head == "verifier":
        model, tok = models.load_causal_lm(ref, cfg.task, cfg.spec_seed, padding_side="right")
        verifier.prepare(model, tok, st.max_length)
        rows = verifier.training_rows([r for r in labels if r["question_id"] in train_q], prompts, tok, st.max_length)
        if not rows:
            raise StageError(f"no labelled responses to train on in {cfg.input('data', 'labels')}")
        return model, tok, verifier.trainer(model, tok, rows, hp)
    model, tok = models.load_sequence_classifier(ref, cfg.task, cfg.spec_seed)
    if st.loss in ("pairwise", "both"):
        if not train_pairs:
            raise StageError(
                f"no training pairs in {cfg.input('data', 'pairs')}: the pseudo_reward stage found no "
                "question with both a positive and a negative response"
            )
        trainer = (
            pairwise_trainer(model, tok, train_pairs, hp, st.max_length)
            if st.loss == "pairwise"
            else both_trainer(model, tok, train_pairs, hp, st.max_length, st.pointwise_weight)
        )
    else:
        rows = pointwise_rows([r for r in labels if r["question_id"] in train_q], prompts, tok, st.max_length)
        if not rows:
            raise StageError(f"no labelled responses to train on in {cfg.input('data', 'labels')}")
        trainer = pointwise_trainer(model, tok, rows, hp)
    return model, tok, trainer


def main(argv=None) -> None:
    cfg, st, args = start(argv, "reward_model")
    device, dtype = torch_setup(cfg.seed, args.threads, st.device, st.precision)
    prompts = {q["id"]: taskdata.messages(q, cfg.task) for q in taskdata.questions(cfg.task, "distill", cfg.spec_seed)}
    pairs, labels = read_jsonl(cfg.input("data", "pairs")), read_jsonl(cfg.input("data", "labels"))
    train_q, eval_q = split_questions([r["question_id"] for r in pairs + labels], st.eval_fraction, cfg.seed)
    train_pairs = preference_rows([p for p in pairs if p["question_id"] in train_q], prompts)
    held_out = [p for p in pairs if p["question_id"] in eval_q]
    eval_pairs = preference_rows(held_out, prompts)
    ckpt = resume_dir(cfg)
    model, tok, trainer = make_trainer(
        cfg, st, trainer_args(cfg, st, device, dtype, ckpt), train_q, train_pairs, labels, prompts
    )
    log(
        f"{loss_type(st)} reward model: {len(train_q)} train / {len(eval_q)} held-out questions, "
        f"{len(train_pairs)} / {len(eval_pairs)} pairs"
    )
    trainer.add_callback(progress_callback(cfg))
    model, state = train_or_load(trainer, ckpt)
    if not ranks.main_alone():  # scoring and the files are rank 0's (runtime/lib/ranks.py)
        return
    history = train_log(state)
    batch = ranks.batch(trainer.args)
    metrics = {
        "loss_type": loss_type(st),
        **batch,
        "loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "steps": state.global_step,
        "train_accuracy": pair_accuracy(model, tok, train_pairs, st),
        "train_pairs": len(train_pairs),
        "eval_accuracy": pair_accuracy(model, tok, eval_pairs, st),
        "eval_pairs": len(eval_pairs),
        "train_questions": len(train_q),
        "eval_questions": len(eval_q),
        "eval_by_kind": held_out_by_kind(model, tok, held_out, prompts, labels, st),
    }
    log(
        f"pairwise accuracy: train {metrics['train_accuracy']}, held-out {metrics['eval_accuracy']} "
        f"({len(eval_pairs)} pairs)"
    )
    scored = score_responses(model, tok, cfg, st)
    if scored:
        log(f"scored {len(scored)} responses of {cfg.upstream['score'][0]!r}")
    result = {"held-out pairwise accuracy": metrics["eval_accuracy"]}
    models.save_model_dir(model, tok, cfg.outputs["model"], history, cfg, result, batch)
    write_jsonl(cfg.outputs["scores"], scored)
    atomic_write_json(cfg.outputs["metrics"], metrics)


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
