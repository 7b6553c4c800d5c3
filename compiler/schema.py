"""The spec schema: defined once, used by the compiler and by every runtime stage.

Defaults follow the paper (Zhang et al. 2025, arXiv 2502.19557), so a short
spec means the paper's pipeline. Each default's description says what it trades.
"""
from __future__ import annotations

import keyword
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
# Stage ids become Snakemake rule names and folder names: keep them plain identifiers.
RESERVED_IDS = frozenset(keyword.kwlist) | {"all", "rules", "config", "workflow", "checkpoints", "scatter",
                                            "gather", "storage", "input", "output", "params", "wildcards"}


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)


# ----------------------------------------------------------------------------- data
class DataSource(Strict):
    """Where a split's rows come from: a local jsonl file or a hub dataset."""

    path: str | None = Field(None, description="Local jsonl file (relative to the spec's folder, or absolute).")
    hub: str | None = Field(None, description="Hub dataset id, e.g. openai/gsm8k (needs network at run time).")
    subset: str | None = Field(None, description="Hub dataset configuration, e.g. main.")
    split: str = Field("train", description="Hub dataset split.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows (quick trials).")
    fraction: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, description="[start, end): only rows whose question hashes into this share of [0, 1). The hash "
                          "is stable, so one file divides into gold/dev/distill/test the same way every time.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` or `hub`")
        if self.fraction is not None and not self.fraction[0] < self.fraction[1]:
            raise ValueError(f"fraction {list(self.fraction)}: start must be below end")
        return self

    def same_rows(self, other: "DataSource") -> bool:
        return (self.path, self.hub, self.subset, self.split) == (other.path, other.hub, other.subset, other.split)


class SyntheticTask(Strict):
    """The embedded task: seeded multi-step word problems, no download needed."""

    min_steps: int = Field(2, ge=1, le=8, description="Fewest +/- steps per problem (easier).")
    max_steps: int = Field(3, ge=1, le=8, description="Most +/- steps per problem (harder).")
    max_number: int = Field(20, ge=2, le=1000, description="Operands are drawn from 1..max_number.")
    num_options: int = Field(10, ge=2, le=10, description="Options per question (multiple_choice format only).")
    gold_size: int = Field(3000, ge=0, description="Gold-labelled corpus, used only to bootstrap a demo teacher.")
    dev_size: int = Field(200, ge=0, description="Gold questions held out of the corpus, for stopping the bootstrap.")
    distill_size: int = Field(500, ge=1, description="Unlabelled questions for distillation.")
    test_size: int = Field(200, ge=1, description="Held-out questions for eval; >= 500 for claims.")

    @model_validator(mode="after")
    def _steps(self):
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) is larger than max_steps ({self.max_steps})")
        return self


class TaskSpec(Strict):
    """The task: a built-in synthetic one or the user's own data (GSM8K or MMLU-Pro style)."""

    format: Literal["gsm8k", "multiple_choice"] = Field(
        "gsm8k", description="gsm8k: answer ends with '#### <number>'; multiple_choice: options + answer letter.")
    synthetic: SyntheticTask | None = Field(None, description="Use the embedded synthetic task.")
    gold: DataSource | None = Field(None, description="Gold-labelled corpus (only to bootstrap a teacher).")
    dev: DataSource | None = Field(None, description="Gold dev questions (only to stop a bootstrap).")
    distill: DataSource | None = Field(None, description="Questions for distillation; answers are never read.")
    test: DataSource | None = Field(None, description="Held-out questions with answers, read only by eval.")
    system_prompt: str = Field("", max_length=2000, description="System message put before each question.")
    allow_test_overlap: bool = Field(
        False, description="Allow test questions that also appear in gold/dev/distill (e.g. test-time training "
                           "on unlabelled test questions); refused by default, since eval would score seen questions.")

    @model_validator(mode="after")
    def _source(self):
        files = any(s is not None for s in (self.gold, self.dev, self.distill, self.test))
        if self.synthetic is None and not files:
            self.synthetic = SyntheticTask()
        if self.synthetic is not None and files:
            raise ValueError("give either `synthetic` or data files (gold/dev/distill/test), not both")
        if self.synthetic is None and self.distill is None:
            raise ValueError("a task with data files needs at least `distill`")
        self._fractions_disjoint()
        return self

    def _fractions_disjoint(self) -> None:
        """Splits cut from one file by `fraction` must not share rows (a test row in distill would leak)."""
        named = [(n, s) for n in ("gold", "dev", "distill", "test") if (s := getattr(self, n)) is not None]
        for i, (a, sa) in enumerate(named):
            for b, sb in named[i + 1:]:
                if not sa.same_rows(sb) or (sa.fraction is None and sb.fraction is None):
                    continue
                fa, fb = sa.fraction or (0.0, 1.0), sb.fraction or (0.0, 1.0)
                if fa[0] < fb[1] and fb[0] < fa[1]:
                    raise ValueError(f"`{a}` and `{b}` read the same rows with overlapping fractions "
                                     f"{list(fa)} and {list(fb)}: give them disjoint [start, end) ranges")


# ----------------------------------------------------------------------------- models
class InitModel(Strict):
    """A random-init model built from a config, with a tokenizer trained on the task corpus."""

    arch: Literal["llama", "gpt2"] = Field("llama", description="Architecture family.")
    hidden_size: int = Field(128, ge=8, le=8192, description="Width; params grow with its square.")
    num_layers: int = Field(2, ge=1, le=64, description="Depth.")
    num_heads: int = Field(4, ge=1, le=128, description="Attention heads; must divide hidden_size.")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width; default 2 x hidden_size.")
    max_length: int = Field(256, ge=32, le=32768, description="Longest sequence (prompt + answer).")
    tie_embeddings: bool = Field(True, description="Share input/output embeddings (fewer params).")

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


class ModelSpec(Strict):
    """A model: a hub id or local directory (`path`), or a random-init `init:` block."""

    path: str | None = Field(None, description="Hub id (org/name) or local directory.")
    init: InitModel | None = Field(None, description="Build a random-init model instead of loading one.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    trust_remote_code: bool = Field(False, description="Run the model repo's own code. Off unless you trust it.")

    @model_validator(mode="after")
    def _one(self):
        if (self.path is None) == (self.init is None):
            raise ValueError("give exactly one of `path` or `init`")
        return self


# ----------------------------------------------------------------------------- resources
class Resources(Strict):
    """What one job asks the scheduler for; unset fields take the stage kind's default."""

    gpus: int | None = Field(None, ge=0, le=64, description="GPUs on one node; >1 launches with accelerate.")
    cpus: int | None = Field(None, ge=1, le=512, description="CPU cores (threads) for the job.")
    mem_mb: int | None = Field(None, ge=100, description="Memory in MB.")
    runtime_min: int | None = Field(None, ge=1, description="Wall-time limit in minutes.")
    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="SLURM partition.")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="SLURM account.")
    constraint: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-&|]{1,128}$", description="SLURM constraint.")


Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# hf: transformers' generate (runs anywhere). vllm: the vLLM engine (GPU only, the `distillc[vllm]` extra);
# refused by the compiler until it has run on a GPU (see README, "Engines").
Engine = Literal["hf", "vllm"]
ENGINE_HELP = "Sampling engine. hf: transformers generate, any device; vllm: GPU only, not available yet."


class StageBase(Strict):
    resources: Resources = Field(default_factory=Resources, description="Scheduler resources for this stage.")
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")
    precision: Precision = Field("auto", description="auto: bf16 on GPU, fp32 on CPU.")
    seed: int | None = Field(None, ge=0, description="Overrides the spec's seed for this stage.")


# ----------------------------------------------------------------------------- stages
class GenerateStage(StageBase):
    """Sample responses from a model: several temperatures x samples per question."""

    kind: Literal["generate"]
    model: str = Field(..., description="A model id or an sft/rl stage id.")
    split: Literal["distill", "test"] = Field("distill", description="Which questions to answer.")
    temperatures: list[Annotated[float, Field(ge=0.0, le=5.0)]] = Field(
        [0.7, 1.0], min_length=1, description="The paper samples at several temperatures for diverse responses.")
    samples_per_temperature: int = Field(4, ge=1, le=256, description="More samples: surer majority vote, slower.")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Longest response.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling cut-off.")
    batch_size: int = Field(256, ge=1, description="Prompts per generate call (x samples).")
    max_questions: int | None = Field(None, ge=1, description="Answer only the first N questions.")
    engine: Engine = Field("hf", description=ENGINE_HELP)

    @model_validator(mode="after")
    def _distinct_temperatures(self):
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures repeat ({self.temperatures}): a temperature's samples share one seed; "
                             "raise samples_per_temperature instead")
        return self


class SftStage(StageBase):
    """Supervised fine-tuning (TRL SFTTrainer), completion-only loss."""

    kind: Literal["sft"]
    model: str = Field(..., description="A model id or a stage id producing a model.")
    data: str = Field(..., description="'gold' (bootstrap a demo teacher), a pseudo_reward stage "
                                       "(its majority-agreeing teacher responses) or a generate stage (all responses).")
    epochs: float = Field(3.0, gt=0, description="Passes over the data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    max_time_s: float | None = Field(
        None, gt=0, description="A guard, not a stop rule: the job FAILS if training runs longer (checkpoints kept "
                                "for a resume). Training stops only on steps, epochs or dev accuracy, so results "
                                "never depend on machine load.")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Tiny models like 1e-3; 7B models 1e-5.")
    batch_size: int = Field(32, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(256, ge=16, description="Truncate examples to this many tokens.")
    stop_at_dev_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop when greedy dev accuracy reaches this (bootstrap only: reads gold dev).")
    eval_every_steps: int = Field(50, ge=1, description="How often to check dev accuracy.")
    save_every_steps: int = Field(100, ge=1, description="Checkpoint interval (beside the output) for resume.")
    lora: "LoraConfig | None" = Field(None, description="Train LoRA adapters (peft) instead of all weights.")


class LoraConfig(Strict):
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Adapter scaling.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Adapter dropout.")


class PseudoRewardStage(StageBase):
    """Majority vote over teacher samples -> pseudo-labels, pairs and pointwise labels. No gold."""

    kind: Literal["pseudo_reward"]
    teacher: str = Field(..., description="A generate stage sampling the teacher.")
    students: list[str] = Field([], description="Generate stages sampling the student(s).")
    min_agreement: float = Field(0.5, ge=0, le=1, description="Drop questions whose majority share is below this.")
    pairs_per_question: int = Field(8, ge=0, description="Cap on preference pairs per question.")


class RewardModelStage(StageBase):
    """A scalar-head reward model (TRL RewardTrainer) trained on pseudo-labels."""

    kind: Literal["reward_model"]
    data: str = Field(..., description="A pseudo_reward stage.")
    model: str | None = Field(None, description="Initial weights; default: the student the labels were sampled from.")
    loss: Literal["pairwise", "pointwise"] = Field("pairwise", description="pairwise: Bradley-Terry on pairs.")
    epochs: float = Field(2.0, gt=0, description="Passes over the pairs.")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, description="Learning rate.")
    batch_size: int = Field(32, ge=1, description="Per-device batch size.")
    max_length: int = Field(256, ge=16, description="Truncate examples to this many tokens.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out slice of pairs for accuracy.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    score: str | None = Field(
        None, description="A generate stage whose responses this model scores after training (scores.jsonl). "
                          "Label-free here; sample the student on split: test and the report judges the scores "
                          "against gold after the fact (within-question AUC, best-of-k).")


RewardSource = Literal["model", "majority", "gold"]


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
        "model", description="model: the learned reward model (the paper's method). majority: 1 if the answer equals "
        "the teacher's majority-vote pseudo-label of the question, else 0 (label-free; needs `votes`; unlabelled "
        "questions are left out). gold: 1 if it equals the GOLD answer: an oracle that reads gold distill answers, "
        "an upper bound for the ladder, never the method.")
    reward_model: str | None = Field(None, description="A reward_model stage (reward: model).")
    votes: str | None = Field(None, description="A pseudo_reward stage whose pseudo-labels score answers "
                                                "(reward: majority).")
    algorithm: Literal["ppo", "grpo", "rloo"] = Field(
        "ppo", description="ppo as in the paper (needs reward: model: its value model starts from the reward "
                           "model); grpo/rloo need no value model and take any reward.")
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

    @model_validator(mode="after")
    def _reward_source(self):
        needs = {"model": "reward_model", "majority": "votes"}.get(self.reward)
        for name in ("reward_model", "votes"):
            what = "a reward_model stage" if name == "reward_model" else "a pseudo_reward stage"
            if name == needs and getattr(self, name) is None:
                raise ValueError(f"reward: {self.reward} needs `{name}`; hint: set {name}: <{what}>, or choose "
                                 "another reward (model: a reward_model stage; majority: votes; gold: the oracle)")
            if name != needs and getattr(self, name) is not None:
                raise ValueError(f"`{name}` is only read with reward: {'model' if name == 'reward_model' else 'majority'}"
                                 f" (this stage has reward: {self.reward}); hint: remove `{name}`, or change reward")
        if self.algorithm == "ppo" and self.reward != "model":
            raise ValueError(f"algorithm: ppo needs a reward model (its value model starts from it), not reward: "
                             f"{self.reward}; hint: set algorithm: rloo or grpo")
        if self.batch_size % self.mini_batches:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of mini_batches ({self.mini_batches}); "
                             "hint: change one of them")
        if self.algorithm != "ppo" and self.batch_size % self.num_generations:
            raise ValueError(f"grpo/rloo sample num_generations ({self.num_generations}) responses per prompt, so "
                             f"batch_size ({self.batch_size}) must be a multiple of it; hint: change one of them")
        return self


class EvalStage(StageBase):
    """Benchmark one model with lm-eval on the held-out questions (or a hub task)."""

    kind: Literal["eval"]
    model: str = Field(..., description="A model id or a stage id producing a model.")
    hub_task: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                 description="An lm-eval task by name (e.g. gsm8k) instead of the spec's test split.")
    samples: int = Field(1, ge=1, le=64, description=">1: sample this many per question; reports single and majority.")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy (with samples=1).")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Longest answer.")
    batch_size: int = Field(64, ge=1, description="lm-eval batch size.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N questions.")
    num_fewshot: int = Field(0, ge=0, le=32, description="Few-shot examples (hub tasks).")
    engine: Engine = Field("hf", description=ENGINE_HELP)

    @model_validator(mode="after")
    def _vote_needs_local_task(self):
        if self.hub_task is not None and self.samples > 1:
            raise ValueError("samples > 1 (majority vote) needs the spec's own test split; "
                             "remove hub_task or set samples: 1")
        return self


class ReportStage(StageBase):
    """The last stage: one self-contained HTML page and a Markdown twin."""

    kind: Literal["report"]
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples for paired bootstrap p-values.")
    examples_per_model: int = Field(3, ge=0, le=50, description="Sample responses shown per model.")


Stage = Annotated[
    Union[GenerateStage, SftStage, PseudoRewardStage, RewardModelStage, RlStage, EvalStage, ReportStage],
    Field(discriminator="kind"),
]
STAGE_CLASSES = {c.model_fields["kind"].annotation.__args__[0]: c for c in
                 (GenerateStage, SftStage, PseudoRewardStage, RewardModelStage, RlStage, EvalStage, ReportStage)}
KINDS = tuple(STAGE_CLASSES)


# ----------------------------------------------------------------------------- tracking
class Tracking(Strict):
    """Where training curves go besides the report. Observing a run never changes it:
    these settings live outside the stage configs, so changing them reruns nothing."""

    tensorboard: bool = Field(True, description="TensorBoard event files in runs/<spec>/<stage>/tensorboard/ "
                                                "(local files, no network).")
    backend: Literal["none", "mlflow", "wandb"] = Field(
        "none", description="Also log to MLflow (local file store by default) or Weights & Biases (network).")
    uri: str | None = Field(None, max_length=1000, description="MLflow tracking URI; default: a local file store "
                                                               "in runs/<spec>/mlruns.")
    experiment: str | None = Field(None, max_length=200, description="MLflow experiment / W&B project; "
                                                                     "default: the spec's name.")


# ----------------------------------------------------------------------------- spec
class Spec(Strict):
    """One distillation experiment: task, models and the stages that connect them."""

    name: str = Field(..., pattern=ID_PATTERN, description="Names build/<name>/ and runs/<name>/.")
    seed: int = Field(0, ge=0, description="Global seed; every stage derives its own from it.")
    task: TaskSpec = Field(default_factory=TaskSpec, description="Questions and answers.")
    models: dict[str, ModelSpec] = Field(..., min_length=1, description="Named models, referenced by stages.")
    stages: dict[str, Stage] = Field(..., min_length=1, description="Stage id -> stage; ids name rules and folders.")
    sweep: dict[str, list] = Field(
        {}, description="Variants: `seed`, `<stage id>.<field>` or `models.<model id>.<field>` -> a list of values; "
                        "their grid runs, sharing every stage a swept value does not reach. "
                        "`zip: [[key, key], ...]` walks lists of equal length together instead of crossing them.")
    tracking: Tracking = Field(default_factory=Tracking, description="TensorBoard (default), MLflow or W&B.")


# ----------------------------------------------------------------------------- resolved stage config
class ModelRef(Strict):
    """A model reference after planning: where a runtime finds the weights."""

    name: str = Field(..., description="The model id or stage id it came from.")
    source: Literal["path", "init", "stage"]
    path: str | None = None        # hub id, local dir, or a stage's output dir
    init: InitModel | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    base: str = Field(..., description="The model id at the root of this model's lineage.")


class StageConfig(Strict):
    """What `python -m runtime.<kind> --config X` reads: one resolved stage."""

    spec_name: str
    id: str
    kind: str
    seed: int = Field(..., description="This stage's seed (its own `seed`, else the spec's).")
    spec_seed: int = Field(..., description="The spec's seed: task data and init models derive from it, "
                                            "so every stage sees the same questions and the same base weights.")
    run_dir: str = Field(..., description="runs/<spec>/ (relative to the workflow root).")
    out_dir: str = Field(..., description="This stage's output folder.")
    task: TaskSpec
    models: dict[str, ModelRef] = Field({}, description="Role -> model (model, policy, reward_model ...).")
    inputs: dict[str, str] = Field({}, description="Role -> path produced by an upstream stage.")
    outputs: dict[str, str] = Field({}, description="Name -> declared output path.")
    upstream: dict[str, list[str]] = Field({}, description="Role -> upstream stage ids (report: all stages).")
    params: dict = Field({}, description="The stage's own fields, as validated.")

    def stage(self):
        """The stage's own validated fields, as its schema class."""
        return STAGE_CLASSES[self.kind].model_validate(self.params)


SftStage.model_rebuild()
