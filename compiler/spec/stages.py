"""The stage kinds: one class each, with its user fields and its facts (compiler/spec/stagekind.py).

Defaults follow the paper (Zhang et al. 2025, arXiv 2502.19557), so a short spec means the
paper's pipeline. Each default's description says what it trades. STAGE_CLASSES at the end is
the one list of kinds: the spec's stage union, the planner, the renderer and the report read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .rewards import RewardValue
from .shards import batches, shards_field
from .stagekind import ENGINE_HELP, Context, Curve, Engine, Output, Ref, Resources, Role, StageBase, Strict

TEACHER, STUDENT = "teacher", "student"  # the roles a pseudo_reward stage gives the models it samples
STOP_AT_ANSWER_HELP = (
    "Stop a response at the end of its first complete final answer (gsm8k format: the line of "
    "the first '#### N'); what a model writes after it is never read. false: decode to the "
    "model's end of turn or the length limit. No effect on multiple_choice tasks."
)


def _no_test(pl) -> bool:
    return pl.spec.task.synthetic is None and pl.spec.task.test is None


class GenerateStage(StageBase):
    """Sample responses from a model: several temperatures x samples per question."""

    kind: Literal["generate"]
    model: str = Field(..., description="A model id or an sft/rl stage id.")
    split: Literal["distill", "test"] = Field("distill", description="Which questions to answer.")
    temperatures: list[Annotated[float, Field(ge=0.0, le=5.0)]] = Field(
        [0.7, 1.0], min_length=1, description="The paper samples at several temperatures for diverse responses."
    )
    samples_per_temperature: int = Field(4, ge=1, le=256, description="More samples: surer majority vote, slower.")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Longest response.")
    stop_at_answer: bool = Field(True, description=STOP_AT_ANSWER_HELP)
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling cut-off.")
    batch_size: int = Field(256, ge=1, description="Prompts per generate call (x samples).")
    max_questions: int | None = Field(None, ge=1, description="Answer only the first N questions.")
    shards: int = shards_field()
    engine: Engine = Field("hf", description=ENGINE_HELP)

    outputs: ClassVar = {"responses": Output("responses.jsonl", passed_on=True)}
    refs: ClassVar = (Ref("model"),)
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=4000, runtime_min=60)
    context: ClassVar = Context("model", None, "max_questions", "max_new_tokens")

    @model_validator(mode="after")
    def _distinct_temperatures(self):
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(
                f"temperatures repeat ({self.temperatures}): a temperature's samples share one seed; "
                "raise samples_per_temperature instead"
            )
        return self

    def shard_count(self) -> int:
        return self.shards

    def batch_units(self, questions: int) -> int:
        """What its batches hold, of a split of `questions`: batch_size questions each (x every sample)."""
        return min(questions, self.max_questions or questions)

    def check_data(self, pl, sid: str, sizes: dict) -> None:
        _check_shards(pl, sid, self, sizes.get(self.split), "questions")

    def check(self, pl, sid: str) -> None:
        if self.split == "test" and _no_test(pl):  # test samples: majority-vote accuracy
            pl.problem(
                ("stages", sid, "split"),
                "split: test, but the task has no test questions",
                self.split,
                "add task.test, or sample split: distill",
            )


class LoraConfig(Strict):
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Adapter scaling.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Adapter dropout.")


def keep_cut_off_field(what: str):
    """The one `keep_cut_off` option (sft, distill_logits, pseudo_reward): a response that ran to
    max_new_tokens without stopping is a ramble, often with no answer or a repeated one; by default
    the stage leaves such responses out of `what` and records how many it dropped."""
    return Field(
        False,
        description=f"Keep responses cut off at max_new_tokens (generate's `cut_off`) in {what}; "
        "by default they are left out and the number dropped is recorded.",
    )


class SftStage(StageBase):
    """Supervised fine-tuning (TRL SFTTrainer), completion-only loss."""

    kind: Literal["sft"]
    model: str = Field(..., description="A model id or a stage id producing a model.")
    data: str = Field(
        ...,
        description="'gold' (bootstrap a demo teacher), a pseudo_reward stage "
        "(its majority-agreeing teacher responses) or a generate stage (all responses).",
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    max_time_s: float | None = Field(
        None,
        gt=0,
        description="A guard, not a stop rule: the job FAILS if training runs longer (checkpoints kept "
        "for a resume). Training stops only on steps, epochs or dev accuracy, so results "
        "never depend on machine load.",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Tiny models like 1e-3; 7B models 1e-5.")
    batch_size: int = Field(32, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(256, ge=16, description="Truncate examples to this many tokens.")
    stop_at_dev_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop when greedy dev accuracy reaches this (bootstrap only: reads gold dev)."
    )
    eval_every_steps: int = Field(50, ge=1, description="How often to check dev accuracy.")
    save_every_steps: int = Field(100, ge=1, description="Checkpoint interval (beside the output) for resume.")
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters (peft) instead of all weights.")
    keep_cut_off: bool = keep_cut_off_field("the training data (not used with data: gold)")

    outputs: ClassVar = {"model": Output("model/", passed_on=True)}
    refs: ClassVar = (Ref("model"), Ref("data", ("pseudo_reward", "generate")))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=120)
    produces_model: ClassVar = True
    starts_from: ClassVar = "model"
    trains: ClassVar = True
    curve: ClassVar = Curve("model", "train_log.jsonl")
    # SFT on all samples (the data ablation) sits before majority-filtered SFT
    roles: ClassVar = (
        Role("sft", "SFT student", 2, ("teacher", "sft_all", "student")),
        Role("sft_all", "SFT student (all teacher samples)", 1.5),
    )
    made_by: ClassVar = "supervised fine-tuning (TRL SFTTrainer, loss on the completion only)"

    @field_validator("stop_at_dev_accuracy")
    @classmethod
    def _bootstrap_only(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("data", "gold") != "gold":
            raise ValueError(
                "stop_at_dev_accuracy reads gold dev answers, so it is only allowed when bootstrapping "
                "a teacher (data: gold); hint: remove it: distillation stages never see gold answers"
            )
        return value

    def ref_value(self, pl, sid: str, field: str):
        return None if field == "data" and self.data == "gold" else super().ref_value(pl, sid, field)

    def check(self, pl, sid: str) -> None:
        if self.data == "gold" and not pl.has_gold():
            pl.problem(
                ("stages", sid, "data"),
                "data: gold needs a gold corpus in the task",
                self.data,
                "set task.gold, or task.synthetic.gold_size > 0",
            )

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        if self.data == "gold":
            return {sid: TEACHER}
        all_samples = getattr(stages.get(self.data), "kind", None) == "generate"
        return {sid: "sft_all" if all_samples else "sft", lineage(stages, sid)[-1]: STUDENT}


class PseudoRewardStage(StageBase):
    """Majority vote over teacher samples -> pseudo-labels, pairs and pointwise labels. No gold."""

    kind: Literal["pseudo_reward"]
    teacher: str = Field(..., description="A generate stage sampling the teacher.")
    students: list[str] = Field([], description="Generate stages sampling the student(s).")
    min_agreement: float = Field(0.5, ge=0, le=1, description="Drop questions whose majority share is below this.")
    pairs_per_question: int = Field(
        8,
        ge=0,
        description="Cap on preference pairs per question (raise it with "
        "many student samples: the paper samples 30 a question).",
    )
    student_pair_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of each question's pairs whose chosen response is a student's own "
        "(student+ vs student-: only the answer tells them apart); the rest put a "
        "teacher positive above a student negative. A kind that runs short is filled "
        "by the other.",
    )
    keep_cut_off: bool = keep_cut_off_field("the labels and pairs (the vote always counts every teacher answer)")

    outputs: ClassVar = {
        "labels": Output("labels.jsonl", passed_on=True),
        "pairs": Output("pairs.jsonl", passed_on=True),
        "stats": Output("stats.json"),
    }
    refs: ClassVar = (Ref("teacher", ("generate",)), Ref("students", ("generate",)))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=2000, runtime_min=30)
    roles: ClassVar = (Role(STUDENT, "base student", 1), Role(TEACHER, "teacher", 0))

    def check(self, pl, sid: str) -> None:
        for name in [self.teacher] + self.students:
            g = pl.spec.stages.get(name)
            if g is not None and g.kind == "generate" and g.split != "distill":
                pl.problem(
                    ("stages", sid),
                    f'"{name}" samples the {g.split} split; pseudo-labels use distill questions',
                    name,
                    f"set stages.{name}.split: distill",
                )

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        out: dict = {getattr(stages.get(s), "model", None): STUDENT for s in self.students}
        return out | {getattr(stages.get(self.teacher), "model", None): TEACHER}


class RewardModelStage(StageBase):
    """A reward model trained on pseudo-labels: a scalar head (TRL RewardTrainer) or a generative verifier."""

    kind: Literal["reward_model"]
    data: str = Field(..., description="A pseudo_reward stage.")
    model: str | None = Field(
        None,
        description="Initial weights: a model id (the base student, the teacher) or a "
        "stage (the SFT student); default: the student the labels were "
        "sampled from.",
    )
    loss: Literal["pairwise", "pointwise", "both"] = Field(
        "both",
        description="pairwise: Bradley-Terry on pairs; pointwise: binary cross-entropy of the score on "
        "every labelled response; both (the paper's): on the pairs, (1 - pointwise_weight) * "
        "Bradley-Terry + pointwise_weight * cross-entropy of each side on its label.",
    )
    pointwise_weight: float = Field(0.5, ge=0, le=1, description="loss: both: the cross-entropy term's weight.")
    head: Literal["scalar", "verifier"] = Field(
        "scalar",
        description="scalar: a score head on the last hidden state, trained by `loss`; verifier: the LM "
        "itself, trained by next-token prediction to answer 'Is the answer correct? Yes or "
        "No.' after a response (Yes when it agrees with the pseudo-label), its reward p(Yes) "
        "(arXiv 2408.15240; `loss` is not read). RL uses it with algorithm grpo or rloo.",
    )
    epochs: float = Field(2.0, gt=0, description="Passes over the pairs.")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Learning rate.")
    batch_size: int = Field(32, ge=1, description="Per-device batch size.")
    max_length: int = Field(256, ge=16, description="Truncate examples to this many tokens.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out slice of pairs for accuracy.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    score: str | None = Field(
        None,
        description="A generate stage whose responses this model scores after training (scores.jsonl). "
        "Label-free here; sample the student on split: test and the report judges the scores "
        "against gold after the fact (within-question AUC, best-of-k).",
    )

    outputs: ClassVar = {
        "model": Output("model/", passed_on=True),
        "metrics": Output("metrics.json"),
        "scores": Output("scores.jsonl"),
    }
    refs: ClassVar = (Ref("data", ("pseudo_reward",)), Ref("score", ("generate",)), Ref("model"))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=120)
    starts_from: ClassVar = "model"
    trains: ClassVar = True
    curve: ClassVar = Curve("model", "train_log.jsonl")
    made_by: ClassVar = (
        "a reward model (a scalar head, TRL RewardTrainer, or a generative verifier) trained on "
        "majority-vote pseudo-labels"
    )

    def check(self, pl, sid: str) -> None:
        """Fields this setting does not read, when the spec sets them (at plan time: a rendered stage
        config writes every field)."""
        if self.head == "verifier" and "loss" in self.model_fields_set:
            pl.problem(
                ("stages", sid, "loss"),
                "`loss` is not read with head: verifier (it trains by next-token prediction)",
                self.loss,
                "remove `loss`, or set head: scalar",
            )
        if "pointwise_weight" in self.model_fields_set and (self.head == "verifier" or self.loss != "both"):
            pl.problem(
                ("stages", sid, "pointwise_weight"),
                "`pointwise_weight` is only read with loss: both and head: scalar",
                self.pointwise_weight,
                "remove it, or set loss: both",
            )

    def ref_value(self, pl, sid: str, field: str):
        if field != "model" or self.model is not None:
            return super().ref_value(pl, sid, field)
        pr = pl.spec.stages.get(self.data)  # default: the student its labels were sampled from
        if pr is None or pr.kind != "pseudo_reward":
            return None
        if not pr.students:
            pl.problem(
                ("stages", sid),
                "reward_model needs `model` when its pseudo_reward stage has no students",
                None,
                "set model: to the student's model id",
            )
            return None
        return getattr(pl.spec.stages.get(pr.students[0]), "model", None)


RewardSource = RewardValue  # compiler/spec/rewards.py: the reward sources' one home


class RlStage(StageBase):
    """Optimise the policy against a reward, KL-penalised to the reference.

    The reward is a ladder that tells where a gain is lost: `model` is the paper's
    learned reward model; `majority` scores an answer 1 when it equals the teacher's
    majority vote on that question (the label-free signal the reward model is meant
    to generalise); `gold` is an oracle upper bound that reads gold answers.
    """

    kind: Literal["rl"]
    policy: str = Field(..., description="The SFT student (a model or sft stage id); also the KL reference.")
    reward: RewardSource = Field(
        "model",
        description="model: the learned reward model (the paper's method). majority: 1 if the answer equals "
        "the teacher's majority-vote pseudo-label of the question, else 0 (label-free; needs `votes`; unlabelled "
        "questions are left out). gold: 1 if it equals the GOLD answer: an oracle that reads gold distill answers, "
        "an upper bound for the ladder, never the method.",
    )
    reward_model: str | None = Field(None, description="A reward_model stage (reward: model).")
    votes: str | None = Field(
        None, description="A pseudo_reward stage whose pseudo-labels score answers (reward: majority)."
    )
    algorithm: Literal["ppo", "grpo", "rloo"] = Field(
        "ppo",
        description="ppo as in the paper (needs reward: model: its value model starts from the reward "
        "model); grpo/rloo need no value model and take any reward.",
    )
    kl_coef: float = Field(0.05, ge=0, description="KL penalty to the reference policy: higher stays closer.")
    episodes: int = Field(1024, ge=1, description="Total sampled responses.")
    response_length: int = Field(64, ge=1, description="Longest sampled response.")
    batch_size: int = Field(32, ge=1, description="Rollout batch size (responses per step, before mini-batches).")
    mini_batches: int = Field(1, ge=1, description="Mini-batches per rollout batch.")
    ppo_epochs: int = Field(1, ge=1, description="Optimisation epochs per rollout batch.")
    num_generations: int = Field(4, ge=2, description="GRPO/RLOO: samples per prompt (the group baseline).")
    learning_rate: float = Field(3e-5, gt=0, le=1.0, description="Policy learning rate.")
    temperature: float = Field(1.0, gt=0, le=5, description="Rollout sampling temperature.")
    save_every_steps: int = Field(20, ge=1, description="Checkpoint interval (beside the output) for resume.")
    engine: Engine = Field("hf", description=ENGINE_HELP + " grpo/rloo rollouts only.")

    outputs: ClassVar = {"model": Output("model/", passed_on=True), "log": Output("rl_log.jsonl")}
    refs: ClassVar = (Ref("policy"), Ref("reward_model", ("reward_model",)), Ref("votes", ("pseudo_reward",)))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=240)
    produces_model: ClassVar = True
    starts_from: ClassVar = "policy"
    trains: ClassVar = True
    context: ClassVar = Context("policy", "distill", None, "response_length")
    curve: ClassVar = Curve("log", keys=("reward", "kl", "entropy"))
    roles: ClassVar = (Role("rl", "RL student", 3, ("sft", "teacher")),)
    made_by: ClassVar = "reinforcement learning against the learned reward model, KL-penalised to the starting policy"

    @model_validator(mode="after")
    def _reward_source(self):
        needs = {"model": "reward_model", "majority": "votes"}.get(self.reward)  # the field each reward reads
        for name in ("reward_model", "votes"):
            what = "a reward_model stage" if name == "reward_model" else "a pseudo_reward stage"
            if name == needs and getattr(self, name) is None:
                raise ValueError(
                    f"reward: {self.reward} needs `{name}`; hint: set {name}: <{what}>, or choose "
                    "another reward (model: a reward_model stage; majority: votes; gold: the oracle)"
                )
            if name != needs and getattr(self, name) is not None:
                raise ValueError(
                    f"`{name}` is only read with reward: {'model' if name == 'reward_model' else 'majority'}"
                    f" (this stage has reward: {self.reward}); hint: remove `{name}`, or change reward"
                )
        if self.algorithm == "ppo" and self.reward != "model":
            raise ValueError(
                f"algorithm: ppo needs a reward model (its value model starts from it), not reward: "
                f"{self.reward}; hint: set algorithm: rloo or grpo"
            )
        if self.batch_size % self.mini_batches:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batches ({self.mini_batches}); "
                "hint: change one of them"
            )
        if self.algorithm != "ppo" and self.batch_size % self.num_generations:
            raise ValueError(
                f"grpo/rloo sample num_generations ({self.num_generations}) responses per prompt, so "
                f"batch_size ({self.batch_size}) must be a multiple of it; hint: change one of them"
            )
        return self

    def check(self, pl, sid: str) -> None:
        rm = pl.spec.stages.get(self.reward_model) if self.reward_model else None
        if self.algorithm == "ppo" and getattr(rm, "head", None) == "verifier":
            pl.problem(
                ("stages", sid, "algorithm"),
                f'PPO needs a scalar reward model; "{self.reward_model}" has head: verifier',
                self.algorithm,
                "set algorithm: grpo or rloo",
            )
        if self.engine == "vllm" and self.algorithm == "ppo":
            pl.problem(
                ("stages", sid, "engine"),
                "engine: vllm needs algorithm grpo or rloo: PPO's rollouts (TRL's PPOTrainer) cannot use vLLM",
                self.engine,
                "set algorithm: grpo (or rloo), or engine: hf",
            )
        n = self.resources.resolved(self.default_resources).processes or 1
        per_step = self.batch_size // (1 if self.algorithm == "ppo" else self.mini_batches)  # one step's responses
        if n > 1 and per_step % n:
            pl.problem(
                ("stages", sid, "batch_size"),
                f"the {n} processes split each step's {per_step} responses (batch_size"
                + ("" if self.algorithm == "ppo" else " / mini_batches")
                + f"), so {n} must divide {per_step}",
                self.batch_size,
                f"set batch_size to a multiple of {n * (1 if self.algorithm == 'ppo' else self.mini_batches)}",
            )

    def check_data(self, pl, sid: str, sizes: dict) -> None:
        if "distill" not in sizes:
            return
        n = len(sizes["distill"].lengths)
        per_q = 1 if self.algorithm == "ppo" else self.num_generations  # grpo/rloo: num_generations per question
        if self.batch_size > n * per_q:
            pl.problem(
                ("stages", sid, "batch_size"),
                f"batch_size {self.batch_size} needs "
                f"{-(-self.batch_size // per_q)} questions per rollout, more than the {n} distill "
                "questions: a rollout batch cannot be filled",
                self.batch_size,
                f"lower batch_size to {n * per_q} or less, or add distill questions",
            )

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        return {sid: "rl"}

    def plan_note(self) -> str | None:
        if self.reward == "gold":
            return "is an ORACLE (reward: gold reads gold distill answers): an upper bound, not the method"
        return None


class DistillLogitsStage(StageBase):
    """White-box distillation: the student learns the teacher's next-token distribution (TRL's GKD trainer).

    Where sft copies the teacher's sampled text (one token per position), this matches
    the teacher's whole distribution at every position of a response, by generalized
    Jensen-Shannon divergence. The responses are the `data` stage's teacher samples
    (off-policy) or, with probability `lmbda` per step, the student's own samples of the
    same questions (on-policy, scored by the teacher). Teacher and student must share
    a tokenizer: the divergence compares the two distributions token id by token id.
    """

    kind: Literal["distill_logits"]
    teacher: str = Field(
        ...,
        description="The teacher: a model id or a model-producing stage (e.g. the bootstrapped "
        "teacher). Only its logits are read; it is never trained.",
    )
    model: str = Field(
        ...,
        description="The student's starting weights: a model id (from scratch) or an sft stage "
        "(a warm start, as RL starts from SFT).",
    )
    data: str = Field(
        ...,
        description="Whose responses to train on: a generate stage (all non-empty responses) or a "
        "pseudo_reward stage (its majority-agreeing teacher responses, as sft). Its "
        "questions are also the prompts the student samples on-policy.",
    )
    lmbda: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of steps on the student's own samples (on-policy): "
        "0 trains on teacher responses only (fastest: no sampling); 1 "
        "only on the student's (it learns from its own mistakes, but "
        "each such step first generates max_new_tokens tokens).",
    )
    beta: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Generalized JSD interpolation: 0 = forward KL(teacher||student) "
        "(covers all the teacher's mass; learns fastest from scratch), 1 = "
        "reverse KL (mode-seeking), 0.5 = symmetric JSD (TRL's default; "
        "with lmbda 0.5 a random-init tiny student learned little).",
    )
    temperature: float = Field(
        0.9,
        gt=0,
        le=5,
        description="Sampling temperature of the on-policy responses (the "
        "loss compares distributions at temperature 1). Lower: "
        "samples nearer greedy, less exploration.",
    )
    max_new_tokens: int = Field(
        96,
        ge=1,
        le=8192,
        description="Longest on-policy response; keep it near the teacher's answer length (a longer one costs time).",
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the data rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Tiny models like 1e-3; 7B models 1e-5.")
    batch_size: int = Field(32, ge=1, description="Per-device batch size (rows, or on-policy prompts).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(256, ge=16, description="Truncate prompt + response to this many tokens.")
    save_every_steps: int = Field(100, ge=1, description="Checkpoint interval (beside the output) for resume.")
    keep_cut_off: bool = keep_cut_off_field("the training data")

    outputs: ClassVar = {"model": Output("model/", passed_on=True)}
    refs: ClassVar = (Ref("teacher"), Ref("model"), Ref("data", ("pseudo_reward", "generate")))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=8000, runtime_min=120)
    produces_model: ClassVar = True
    starts_from: ClassVar = "model"
    trains: ClassVar = True
    context: ClassVar = Context("model", "distill", None, "max_new_tokens")
    curve: ClassVar = Curve("model", "train_log.jsonl")
    roles: ClassVar = (Role("logits", "logit-distilled student (GKD)", 2.5, ("sft", "teacher", "student")),)
    made_by: ClassVar = (
        "logit distillation (TRL GKDTrainer): the teacher's next-token distributions on its "
        "responses and, with probability lmbda per step, on the student's own samples"
    )

    def check(self, pl, sid: str) -> None:
        names = [lineage(pl.spec.stages, name)[-1] for name in (self.teacher, self.model)]
        why = pl.tokenizer_mismatch(*names) if all(n in pl.spec.models for n in names) else None
        if why:
            pl.problem(
                ("stages", sid, "teacher"),
                why,
                self.teacher,
                "pick a student of the teacher's family (or `from:` the teacher), or distil through text "
                "(an sft stage)",
            )

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        return {sid: "logits", lineage(stages, sid)[-1]: STUDENT}


class EvalStage(StageBase):
    """Benchmark one model with lm-eval on the held-out questions (or a hub task)."""

    kind: Literal["eval"]
    model: str = Field(..., description="A model id or a stage id producing a model.")
    hub_task: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_\-]{1,64}$",
        description="An lm-eval task by name (e.g. gsm8k) instead of the spec's test split.",
    )
    samples: int = Field(1, ge=1, le=64, description=">1: sample this many per question; reports single and majority.")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy (with samples=1).")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Longest answer.")
    stop_at_answer: bool = Field(True, description=STOP_AT_ANSWER_HELP)
    batch_size: int = Field(64, ge=1, description="lm-eval batch size.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N questions.")
    num_fewshot: int = Field(0, ge=0, le=32, description="Few-shot examples (hub tasks).")
    shards: int = shards_field()
    engine: Engine = Field("hf", description=ENGINE_HELP)
    # Left out of the stage config while unset: adding the option reruns no finished eval (bytes decide reruns).
    rerank: str | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="A reward_model stage (either head): with samples >= 2, also report best-of-k accuracy, "
        "each question's answer from the sample this reward model scores highest (ties: the first "
        "sample). Shows what the reward model is worth at test time, without RL.",
    )

    outputs: ClassVar = {"metrics": Output("metrics.json"), "samples": Output("samples.jsonl")}
    refs: ClassVar = (Ref("model"), Ref("rerank", ("reward_model",)))
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=4000, runtime_min=60)
    context: ClassVar = Context("model", "test", "limit", "max_new_tokens")

    @model_validator(mode="after")
    def _vote_needs_local_task(self):
        if self.hub_task is not None and self.samples > 1:
            raise ValueError(
                "samples > 1 (majority vote) needs the spec's own test split; remove hub_task or set samples: 1"
            )
        return self

    @model_validator(mode="after")
    def _shards_split_whole_questions(self):
        if self.shards > 1 and self.hub_task is not None:
            raise ValueError(
                f"shards: {self.shards} splits the spec's own test questions into lm-eval batches; a hub task "
                "(lm-eval's own data and prompts) runs as one job; hint: remove shards, or hub_task"
            )
        if self.shards > 1 and self.batch_size % self.samples:
            raise ValueError(
                f"with shards, batch_size ({self.batch_size}) must be a multiple of samples ({self.samples}), so "
                "that no question's samples fall in two shards' batches; hint: set batch_size to "
                f"{max(self.samples, self.batch_size // self.samples * self.samples)}"
            )
        return self

    def shard_count(self) -> int:
        return self.shards

    def batch_units(self, questions: int) -> int:
        """What its batches hold, of a split of `questions`: lm-eval batches requests, `samples` per question."""
        return min(questions, self.limit or questions) * self.samples

    def check_data(self, pl, sid: str, sizes: dict) -> None:
        if self.hub_task is None:
            _check_shards(pl, sid, self, sizes.get("test"), "questions" if self.samples == 1 else "samples")

    def check(self, pl, sid: str) -> None:
        if self.hub_task is None and _no_test(pl):
            pl.problem(
                ("stages", sid),
                "eval scores the task's test questions, but the task has none",
                None,
                "add task.test (questions with answers), or set hub_task",
            )
        self._check_rerank(pl, sid)

    def _check_rerank(self, pl, sid: str) -> None:
        """Best-of-k reranks the k samples of the spec's own questions: the eval stage scores them itself,
        after lm-eval (a hub task's prompts and answers are lm-eval's own)."""
        if self.rerank is None:
            return
        if self.hub_task is not None:
            pl.problem(
                ("stages", sid, "rerank"),
                "rerank scores the samples of the spec's own test questions, not a hub task's",
                self.rerank,
                "remove hub_task (and sample the spec's test split), or remove rerank",
            )
        elif self.shards > 1:
            pl.problem(
                ("stages", sid, "rerank"),
                f"rerank scores every sample of the stage in one job, but shards is {self.shards}",
                self.rerank,
                "remove shards (or set shards: 1) on this eval, or remove rerank",
            )
        elif self.samples < 2:
            pl.problem(
                ("stages", sid, "rerank"),
                f"rerank picks the best of several samples per question, but samples is {self.samples}",
                self.rerank,
                "set samples: 2 or more (e.g. samples: 4, temperature: 1.0), or remove rerank",
            )

    def sizes_context(self) -> Context | None:
        return None if self.hub_task else self.context  # a hub task's prompts are not read here

    def build_inputs(self, sid: str, spec_name: str, build_dir: str) -> dict[str, str]:
        if self.hub_task is not None:
            return {}
        return {"lm_eval_task": f"{build_dir}/lm_eval/{sid}/{lm_eval_task_name(spec_name, sid)}.yaml"}


def _check_shards(pl, sid: str, st, split, unit: str) -> None:
    """A shard samples at least one whole batch: refuse more shards than the stage has batches (where the
    split's size is known here; a hub split is checked when the stage starts)."""
    if st.shards == 1 or split is None:
        return
    units = st.batch_units(len(split.lengths))
    total = batches(units, st.batch_size)
    if st.shards <= total:
        return
    step = getattr(st, "samples", 1)  # eval: a batch holds whole questions' samples
    fit = units // st.shards // step * step
    pl.problem(
        ("stages", sid, "shards"),
        f"shards: {st.shards}, but the stage has only {total} batch{'es' if total != 1 else ''} "
        f"({units} {unit} / batch_size {st.batch_size}): each shard samples whole batches",
        st.shards,
        f"lower shards to {total}" + (f", or batch_size to {fit}" if fit else ", or add questions"),
    )


def lm_eval_task_name(spec_name: str, stage_id: str) -> str:
    return f"distillc_{spec_name}_{stage_id}"


class ReportStage(StageBase):
    """The last stage: one self-contained HTML page and a Markdown twin."""

    kind: Literal["report"]
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples for paired bootstrap p-values.")
    examples_per_model: int = Field(3, ge=0, le=50, description="Sample responses shown per model.")

    outputs: ClassVar = {"html": Output("report.html"), "md": Output("report.md")}
    default_resources: ClassVar = Resources(gpus=0, cpus=1, mem_mb=2000, runtime_min=15)


# The one list of stage kinds.
STAGE_CLASSES: dict[str, type[StageBase]] = {
    c.kind_name(): c
    for c in (
        GenerateStage,
        SftStage,
        PseudoRewardStage,
        RewardModelStage,
        RlStage,
        DistillLogitsStage,
        EvalStage,
        ReportStage,
    )
}
KINDS = tuple(STAGE_CLASSES)
if TYPE_CHECKING:  # a type checker sees what every stage class has in common
    Stage = StageBase
else:
    Stage = Annotated[Union[tuple(STAGE_CLASSES.values())], Field(discriminator="kind")]  # noqa: UP007 (from the registry)
REPORT = ReportStage.kind_name()


def lineage(stages: dict, name: str | None) -> list[str]:
    """[name, the weights it started from, ..., a model id]: model-producing stages name their start."""
    chain: list[str] = []
    while name and name not in chain:
        chain.append(name)
        st = stages.get(name)
        name = getattr(st, st.starts_from) if st is not None and st.produces_model else None
    return chain


def report_roles(stages: dict) -> dict[str, str]:
    """Model or stage name -> report role, from every stage's wiring: a stage's own role first, then
    the students its data came from; a model that a pseudo_reward stage samples as teacher is the teacher."""
    own, others = {}, []
    for sid, st in stages.items():
        for name, role in st.report_roles(sid, stages).items():
            if name == sid:
                own[name] = role
            elif name:
                others.append((name, role))
    out = own | {n: r for n, r in others if r != TEACHER and n not in own}
    return out | {n: r for n, r in others if r == TEACHER}


def all_roles() -> dict[str, Role]:
    """Every report role the kinds define, by name."""
    return {r.name: r for c in STAGE_CLASSES.values() for r in c.roles}
