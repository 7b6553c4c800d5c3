"""rl: optimise the SFT student against a reward, KL-penalised to itself.

The reward (`reward:`) is one rung of a ladder: the learned reward model (the
paper's method), the teacher's majority-vote pseudo-label of the question (1 when
the response's answer equals it: label-free, no model), or the gold answer (an
oracle upper bound: the only place besides the bootstrap, eval and report that
reads gold, and only when the spec says `reward: gold`).

ppo (the paper's): trl.experimental.ppo (trl 1.12) with the policy, a frozen copy of
it as the KL reference, the reward model, and a value model initialised from the
reward model. grpo / rloo: TRL's GRPOTrainer / RLOOTrainer with the reward model,
or the answer-matching function, as the reward; they need no value model.

rl_log.jsonl has one row per step: "reward" (mean reward-model score of the
sampled responses; for ppo minus missing_eos_penalty on responses that never
stopped, as TRL scores them), "kl", "entropy", "loss", plus the trainer's other
metrics under TRL's names. TRL logs ppo's kl and entropy summed over a response,
grpo/rloo's averaged per token; grpo with kl_coef 0 computes no kl (null).

Rollouts stop where generate and eval stop (runtime/lib/decoding.py): grpo/rloo at every stop token of the
policy (generation_kwargs eos_token_id); TRL's PPO stops, truncates and scores at one token, so it gets
the chat template's turn end (ppo_tokenizer). No answer stop here (TRL builds its own generate call).
grpo/rloo's rl_log carries TRL's `completions/clipped_ratio` (share of rollouts cut off at response_length).

Resume: GRPO/RLOO resume from Trainer checkpoints. PPOTrainer.train() in trl 1.12
cannot resume, so every save_every_steps the policy, value model and log are
saved beside the outputs, and a rerun restarts from them for the remaining
episodes (the learning rate continues its linear decay; Adam's moments restart).
PPOTrainer builds its own Accelerator without mixed precision, so PPO trains in
fp32 whatever `precision` says; grpo/rloo follow it.

In several processes (`resources.processes`, runtime/lib/ranks.py) `batch_size` and `episodes` keep
their meaning: each process samples and scores batch_size / N responses of every rollout (`per_process`).
grpo/rloo gather the rewards before the group baselines, so their advantages are those of one
process; TRL's PPO would whiten the advantages over each process's own responses, so ppo whitens them
over the whole rollout instead (`rollout_whiten`), as one process does.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
from pathlib import Path

from compiler.spec.contract import StageConfig
from compiler.spec.stages import RlStage

from .lib import answers, decoding, models, ranks, verifier
from .lib import task as taskdata
from .lib.checkpoints import current, resume_dir, swap_in, train_or_load
from .lib.common import StageError, derive_seed, log, progress_callback, read_jsonl, start, torch_setup, write_jsonl
from .lib.context import check_context_before_weights
from .lib.reward_scoring import verifier_reward
from .lib.tracking import tracking_args

MISSING_EOS_PENALTY = 1.0  # PPO: a response cut off at response_length scores this much lower
PPO_NAMES = {
    "objective/scores": "reward",
    "objective/kl": "kl",
    "objective/entropy": "entropy",
    "loss/policy_avg": "loss",
}
TIMING = {"eps", "step_time"}  # wall-clock dependent: left out so that logs are reproducible


def to_row(logs: dict, step: int, names: dict) -> dict:
    row = {"step": step, "kl": None}
    row.update({names.get(k, k): v for k, v in logs.items() if k not in TIMING and k != "step"})
    return row


def log_callback(names: dict, offset: int = 0):
    """A TrainerCallback that prints step, reward and kl of every logged step to stderr."""
    from transformers import TrainerCallback

    class LogLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            row = to_row(logs or {}, state.global_step + offset, names)
            if "reward" in row:
                kl = "n/a" if row["kl"] is None else f"{row['kl']:.4f}"
                log(f"step {row['step']}: reward {row['reward']:.4f} kl {kl} entropy {row.get('entropy', 0):.3f}")

    return LogLine()


def history_rows(state, names: dict, offset: int = 0) -> list[dict]:
    """rl_log rows from the trainer's log history (the final summary row has no reward: left out)."""
    rows = [to_row(r, r["step"] + offset, names) for r in state.log_history]
    return [r for r in rows if "reward" in r]


def load_reward_model(path: str, policy_tok=None):
    """The reward model (frozen) and its tokenizer; PPO scores policy token ids directly, so vocabularies must match."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if verifier.saved(path):
        raise StageError(
            f"the reward model {path} is a verifier (head: verifier); PPO needs a scalar head: "
            "set algorithm: grpo or rloo"
        )
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    if policy_tok is not None and tok.get_vocab() != policy_tok.get_vocab():
        raise StageError(
            f"the reward model {path} has another vocabulary than the policy; PPO scores the policy's "
            "tokens directly: train the reward model from the same base model, or use grpo/rloo"
        )
    tok.padding_side = "right"
    rm.config.pad_token_id = tok.pad_token_id
    return rm.eval(), tok


def per_process(n: int) -> int:
    """Each process's share of `n` responses: rl's batch_size is one rollout's responses, whatever the
    number of processes (so is `episodes`), and each process samples and scores its part of it. The
    compiler checks that the processes divide it."""
    return n // ranks.world()


def trainer_args(cfg: StageConfig, st: RlStage, device, dtype) -> dict:
    import torch

    return dict(
        learning_rate=st.learning_rate,
        temperature=st.temperature,
        **tracking_args(cfg),
        use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        disable_tqdm=True,
        logging_steps=1,
        # TRL's PPO/RLOO configs recompute activations by default: saves GPU memory, on CPU only costs time
        activation_checkpointing=device.type != "cpu",
    )


# ----------------------------------------------------------------------------- ppo
def prompt_ids(prompts: list[list[dict]], tok) -> list[list[int]]:
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def snapshot(dir_: Path, policy, value, tok, rows: list[dict], step: int) -> None:
    """Save what a PPO restart needs into dir_/latest, swapping the folder in whole (checkpoints.swap_in)."""
    tmp = dir_ / "latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    models.save(policy, tok, tmp / "policy")
    value.save_pretrained(tmp / "value")
    write_jsonl(tmp / "rl_log.jsonl", rows)
    (tmp / "progress.json").write_text(json.dumps({"step": step}))
    swap_in(tmp, dir_ / "latest")


def ppo_start(cfg: StageConfig, latest: Path):
    """(policy, value model, rl_log rows so far, steps done): the last snapshot's, else fresh ones."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    latest = current(latest) or latest  # a kill mid-swap leaves the previous snapshot, complete
    if not (latest / "progress.json").exists():
        policy, _ = models.load_causal_lm(cfg.models["policy"], cfg.task, cfg.spec_seed)
        value, _ = load_reward_model(cfg.input("reward_model"))  # the value model starts as the reward model
        return policy, value, [], 0
    done = json.loads((latest / "progress.json").read_text())["step"]
    log(f"restarting from {latest} after step {done}")
    return (
        AutoModelForCausalLM.from_pretrained(latest / "policy"),
        AutoModelForSequenceClassification.from_pretrained(latest / "value"),
        read_jsonl(latest / "rl_log.jsonl"),
        done,
    )


def ppo_config(cfg: StageConfig, st: RlStage, out: Path, done: int, total: int, device, dtype):
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=str(out),
        total_episodes=(total - done) * st.batch_size,
        response_length=st.response_length,
        per_device_train_batch_size=per_process(st.batch_size),
        local_rollout_forward_batch_size=per_process(st.batch_size),
        num_mini_batches=st.mini_batches,
        num_ppo_epochs=st.ppo_epochs,
        kl_coef=st.kl_coef,
        stop_token="eos",
        missing_eos_penalty=MISSING_EOS_PENALTY,
        num_sample_generations=0,
        save_strategy="no",
        seed=derive_seed(cfg.seed, "rl", done) if done else cfg.seed,
        **{
            **trainer_args(cfg, st, device, dtype),  # linear decay continues where it stopped
            "learning_rate": st.learning_rate * (total - done) / total,
        },
    )


def ppo_tokenizer(tok):
    """The tokenizer PPO trains with: TRL's PPO stops, truncates and scores (missing_eos_penalty) at ONE
    token, the tokenizer's eos. A chat-prompted policy ends its turn with its template's turn end
    (decoding.turn_end_id): where that differs from eos (Llama-3-Instruct), a copy with it as eos."""
    import copy

    turn = decoding.turn_end_id(tok)
    if turn is None or turn == tok.eos_token_id:
        return tok
    tok = copy.deepcopy(tok)
    tok.eos_token = tok.convert_ids_to_tokens(turn)
    return tok


def run_ppo(cfg: StageConfig, st: RlStage, prompts, device, dtype):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.ppo import PPOTrainer

    ckpt = resume_dir(cfg)
    ref, tok = models.load_causal_lm(cfg.models["policy"], cfg.task, cfg.spec_seed, padding_side="left")
    reward, _ = load_reward_model(cfg.input("reward_model"), tok)
    policy, value, previous, done = ppo_start(cfg, ckpt / "latest")
    total = math.ceil(st.episodes / st.batch_size)
    if done >= total:
        return policy, tok, previous, None
    data = Dataset.from_dict({"input_ids": prompt_ids(prompts, tok)})
    if len(data) < st.batch_size:
        raise StageError(f"{len(data)} distill questions but batch_size {st.batch_size}: lower batch_size")

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = done + state.global_step
            if step % st.save_every_steps == 0 and step < total and ranks.is_main():
                snapshot(ckpt, policy, value, tok, previous + history_rows(state, PPO_NAMES, done), step)

    if ranks.world() > 1:
        from trl.experimental.ppo import ppo_trainer

        ppo_trainer.masked_whiten = rollout_whiten  # PPOTrainer.train looks it up by name at each call
    eos = policy.generation_config.eos_token_id  # TRL narrows it to its one stop token: put back after
    trainer = PPOTrainer(
        args=ppo_config(cfg, st, ckpt / "trainer", done, total, device, dtype),
        processing_class=ppo_tokenizer(tok),
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=data,
        eval_dataset=data.select(range(st.batch_size)),
        callbacks=[log_callback(PPO_NAMES, done), Snapshot(), progress_callback(cfg, done)],
    )
    gc.freeze()  # PPOTrainer runs gc.collect() twice a step: ~0.7 s each over the libraries' objects
    trainer.train()
    gc.unfreeze()
    policy.generation_config.eos_token_id = eos
    return policy, tok, previous + history_rows(trainer.state, PPO_NAMES, done), ranks.batch(trainer.args)


def rollout_whiten(values, mask, shift_mean: bool = True):
    """TRL's PPO `masked_whiten` (values minus the mean, over the square root of the unbiased variance, both
    over the unmasked entries) taken over every process's responses of the rollout, as one process takes it.
    TRL's own takes each process's share alone, so the processes' advantages had different means and scales
    (ppo in 2 processes scored 0.04 higher than in 1, 5 of 6 seed pairs, README). The sums go through
    `ranks.total`; their order differs from one process's, so the result agrees with it to float rounding."""
    m = mask.to(values.dtype)
    total, count = ranks.total([(values * m).sum().item(), m.sum().item()])
    mean = total / count
    (squares,) = ranks.total([((values - mean) ** 2 * m).sum().item()])
    variance = squares / count * (count / (count - 1))  # Bessel's correction, as TRL's masked_var
    whitened = (values - mean) * (variance + 1e-8) ** -0.5
    return whitened if shift_mean else whitened + mean


# ----------------------------------------------------------------------------- grpo / rloo
def policy_path(cfg: StageConfig) -> str:
    """A folder holding the policy: GRPO/RLOO load their KL reference from the policy's own path."""
    ref = cfg.models["policy"]
    if ref.source != "init":
        return models.local_folder(ref)
    path = resume_dir(cfg, "init_policy")
    if not (path / "config.json").exists() and ranks.is_main():
        models.save(*models.load_causal_lm(ref, cfg.task, cfg.spec_seed), path)  # type: ignore[call-arg]  # (model, tokenizer), path
    ranks.barrier()
    return str(path)


def answer_targets(cfg: StageConfig, st: RlStage) -> dict[str, str] | None:
    """question id -> the answer that earns reward 1 (reward: majority or gold); None for reward: model."""
    if st.reward == "majority":  # every labelled row of a kept question carries the question's pseudo-label
        return {r["question_id"]: r["pseudo_label"] for r in read_jsonl(cfg.input("votes", "labels"))}
    if st.reward == "gold":  # the oracle rung: the spec asked for it by name
        rows = taskdata.gold(cfg.task, "distill", cfg.spec_seed)
        missing = [r["id"] for r in rows if "target" not in r]
        if missing:
            raise StageError(
                f"rl stage {cfg.id!r}: reward: gold needs an answer on every distill question; "
                f"{len(missing)} have none (e.g. {missing[:3]})"
            )
        return {r["id"]: r["target"] for r in rows}
    return None


def answer_reward(targets: dict[str, str], fmt: str, name: str):
    """A TRL reward function: 1.0 when a completion's extracted answer equals its question's target, else 0.0."""

    def reward(prompts, completions, question_id, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(answers.same(answers.extract(t, fmt), targets[q])) for t, q in zip(texts, question_id)]

    reward.__name__ = name  # TRL logs it as rewards/<name>/mean
    return reward


def reward_function(cfg: StageConfig, st: RlStage, targets):
    """(reward_funcs, reward_processing_classes) for GRPO/RLOO: the reward model, or answer matching."""
    if targets is None and verifier.saved(cfg.input("reward_model")):
        return verifier_reward(cfg.input("reward_model")), None
    if targets is None:
        model, tok = load_reward_model(cfg.input("reward_model"))
        return model, tok
    return answer_reward(targets, cfg.task.format, f"{st.reward}_answer"), None


def run_group(cfg: StageConfig, st: RlStage, questions, targets, device, dtype):
    """GRPO or RLOO: batch_size completions per rollout (batch_size / num_generations prompts)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[st.algorithm]
    path = policy_path(cfg)
    policy, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    reward, reward_tok = reward_function(cfg, st, targets)
    rollouts = math.ceil(st.episodes / st.batch_size)
    ckpt = resume_dir(cfg)
    args = config_cls(
        output_dir=str(ckpt),
        max_steps=rollouts * st.mini_batches * st.ppo_epochs,
        per_device_train_batch_size=per_process(st.batch_size // st.mini_batches),
        steps_per_generation=st.mini_batches,
        num_iterations=st.ppo_epochs,
        num_generations=st.num_generations,
        max_completion_length=st.response_length,
        beta=st.kl_coef,
        generation_kwargs={"eos_token_id": decoding.stop_token_ids(policy, tok)},
        save_strategy="steps",
        save_steps=st.save_every_steps,
        save_total_limit=1,
        seed=cfg.seed,
        **trainer_args(cfg, st, device, dtype),
    )
    trainer = trainer_cls(
        model=policy,
        reward_funcs=reward,
        reward_processing_classes=reward_tok,
        args=args,
        processing_class=tok,
        train_dataset=Dataset.from_list([{"prompt": m, "question_id": q} for q, m in questions]),
        callbacks=[log_callback({}), progress_callback(cfg)],
    )
    policy, state = train_or_load(trainer, ckpt)
    return policy, tok, history_rows(state, {}), ranks.batch(trainer.args)


def final_results(rows: list[dict]) -> dict[str, float | None]:
    """For the model card: mean reward and KL over the last 10% of logged steps (one step is noisy)."""
    tail = rows[-max(1, len(rows) // 10) :]

    def mean(key: str) -> float | None:
        values = [r[key] for r in tail if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    return (
        {
            "final reward (mean of the last 10% of steps)": mean("reward"),
            "final KL (mean of the last 10% of steps)": mean("kl"),
        }
        if rows
        else {}
    )


def main(argv=None) -> None:
    cfg, st, args = start(argv, "rl")
    device, dtype = torch_setup(cfg.seed, args.threads, st.device, st.precision)
    questions = [
        (q["id"], taskdata.messages(q, cfg.task)) for q in taskdata.questions(cfg.task, "distill", cfg.spec_seed)
    ]
    check_context_before_weights(
        cfg,
        cfg.models["policy"],
        taskdata.questions(cfg.task, "distill", cfg.spec_seed),
        st.response_length,
        "response_length",
    )
    targets = answer_targets(cfg, st)
    if targets is not None:  # majority: questions the vote dropped have no label, so no reward
        questions = [(q, m) for q, m in questions if q in targets]
        log(
            f"reward: {st.reward} answer ({'ORACLE: gold answers' if st.reward == 'gold' else 'pseudo-labels'}) "
            f"on {len(questions)} distill questions"
        )
    if len(questions) * (st.num_generations if st.algorithm != "ppo" else 1) < st.batch_size:
        raise StageError(
            f"rl stage {cfg.id!r}: {len(questions)} questions are too few for batch_size "
            f"{st.batch_size}: lower batch_size"
        )
    if st.algorithm == "ppo":
        policy, tok, rows, batch = run_ppo(cfg, st, [m for _, m in questions], device, dtype)
    else:
        policy, tok, rows, batch = run_group(cfg, st, questions, targets, device, dtype)
    if not ranks.main_alone():  # the files are rank 0's (runtime/lib/ranks.py)
        return
    if rows:
        log(f"{st.algorithm}: {len(rows)} steps, reward {rows[0]['reward']:.4f} -> {rows[-1]['reward']:.4f}")
    models.save_model_dir(policy, tok, cfg.outputs["model"], rows, cfg, final_results(rows), batch)
    write_jsonl(cfg.outputs["log"], rows)


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
