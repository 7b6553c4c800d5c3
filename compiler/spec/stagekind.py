"""What every stage kind is made of: the user fields all stages share, and the facts a kind declares.

A stage kind is one class (compiler/spec/stages.py). Besides its user fields it carries, as class
attributes, everything the compiler and the report need to know about it: which fields name
other stages or models, what it writes, what it asks the scheduler for, whether its output is a
model, and how the report names its model. The planner, the renderer and the report read these
facts from the class, so adding a kind is adding a class: no list elsewhere to keep in step.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=True)


class Resources(Strict):
    """What one job asks the scheduler for; unset fields take the stage kind's default."""

    gpus: int | None = Field(None, ge=0, le=64, description="GPUs on one node; >1 launches with accelerate.")
    processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Training stages: run in this many data-parallel processes (default: gpus if any, else 1); "
        "without GPUs, CPU processes (gloo), each with cpus // processes threads. Each process takes its own "
        "rows of every batch, so a step sees batch_size x processes rows (rl: batch_size is split).",
    )
    cpus: int | None = Field(None, ge=1, le=512, description="CPU cores (threads) for the job.")
    mem_mb: int | None = Field(None, ge=100, description="Memory in MB.")
    runtime_min: int | None = Field(None, ge=1, description="Wall-time limit in minutes.")
    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="SLURM partition.")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="SLURM account.")
    constraint: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-&|]{1,128}$", description="SLURM constraint.")

    def resolved(self, defaults: Resources) -> Resources:
        """These resources, unset fields from the kind's `defaults`: `processes` defaults to the GPUs (one
        process drives one GPU), else 1; without GPUs, unset `cpus` grow to one core per process."""
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        out = Resources(**{**defaults.model_dump(), **given})
        if out.processes is None:
            out.processes = out.gpus if out.gpus else 1
        if self.cpus is None and not out.gpus:
            out.cpus = max(out.cpus or 1, out.processes)
        return out


Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# hf: transformers' generate (runs anywhere). vllm: the vLLM engine (GPU only, the `distillc[vllm]` extra);
# refused by the compiler until it has run on a GPU (see README, "Engines").
Engine = Literal["hf", "vllm"]
ENGINE_HELP = "Sampling engine. hf: transformers generate, any device; vllm: GPU only, not available yet."


@dataclass(frozen=True)
class Ref:
    """A user field naming other stages (of one of `kinds`) or, with no kinds, a model: a model id
    or a stage whose kind produces a model. The upstream stage's passed-on outputs become this
    stage's inputs, named `<field>_<output>` (a model: `<field>`; a list field: `<field>_<i>_<output>`)."""

    field: str
    kinds: tuple[str, ...] = ()

    @property
    def to_model(self) -> bool:
        return not self.kinds


BENCHMARK = "benchmark"  # the report's input of each stage's Snakemake benchmark file: `<stage id>_benchmark`
LOCK = "lock"  # the report's input of the spec's lock file


def input_key(field: str, output: str = "model", index: int | None = None, *, bare_model: bool = True) -> str:
    """The name of an input in a stage config, the one spelling the planner writes and the stages read:
    `<field>_<output>`, `<field>_<i>_<output>` for the i-th stage of a list field, and a model alone
    `<field>`. The report names its inputs `<stage id>_<output>`, a model too (bare_model=False)."""
    key = field if index is None else f"{field}_{index}"
    return key if output == "model" and bare_model else f"{key}_{output}"


@dataclass(frozen=True)
class Output:
    """A file (trailing "/": a folder) relative to the stage's folder."""

    file: str
    passed_on: bool = False  # an input of every stage that references this one


@dataclass(frozen=True)
class Role:
    """How the report names a model of this role, and where it stands in the pipeline."""

    name: str
    label: str
    rank: float  # later in the pipeline = higher = compared first
    compared_with: tuple[str, ...] = ()  # roles its highlighted comparisons are against, in order


@dataclass(frozen=True)
class Context:
    """What a stage asks of its model's context. The one check "the prompt plus the new tokens fit the
    context" is `check_context`: compiler.data.sizes at validate (init models), runtime.lib.context at start (others)."""

    model_field: str  # the field (and model role) naming the model
    split: str | None  # the split it reads; None: the stage's own `split` field
    first: str | None  # the field limiting it to the first N questions
    new_tokens: str  # the field giving the longest response


@dataclass(frozen=True)
class Curve:
    """A training curve the report plots: rows of a JSONL log (an output, or a file inside one)."""

    output: str
    file: str = ""
    keys: tuple[str, ...] = ("loss",)


class StageBase(Strict):
    """The fields every stage has; subclasses add theirs and declare their facts."""

    resources: Resources = Field(default_factory=Resources, description="Scheduler resources for this stage.")
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")
    precision: Precision = Field("auto", description="auto: bf16 on GPU, fp32 on CPU.")
    seed: int | None = Field(None, ge=0, description="Overrides the spec's seed for this stage.")

    if typing.TYPE_CHECKING:
        kind: str  # each kind's class declares it as a Literal field

    outputs: ClassVar[dict[str, Output]] = {}
    refs: ClassVar[tuple[Ref, ...]] = ()
    default_resources: ClassVar[Resources] = Resources(gpus=0, cpus=1, mem_mb=4000, runtime_min=60)
    produces_model: ClassVar[bool] = False  # its `model` output is a causal LM usable as model:/policy:
    starts_from: ClassVar[str | None] = None  # the field naming the weights it starts from (lineage)
    trains: ClassVar[bool] = False  # several GPUs: launched with accelerate
    context: ClassVar[Context | None] = None
    curve: ClassVar[Curve | None] = None
    roles: ClassVar[tuple[Role, ...]] = ()  # the report roles this kind defines
    made_by: ClassVar[str] = ""  # the model card's "how it was made"

    @classmethod
    def kind_name(cls) -> str:
        return typing.get_args(cls.model_fields["kind"].annotation)[0]

    def check(self, pl, sid: str) -> None:
        """Rules that need the rest of the spec; problems go to the planner `pl`."""

    def check_data(self, pl, sid: str, sizes: dict) -> None:
        """Rules that need the task's data read (sizes: split -> compiler.data.sizes.SplitSizes)."""

    def shard_count(self) -> int:
        """How many jobs sample this stage (compiler/spec/shards.py); kinds with a `shards` field say theirs."""
        return 1

    def batch_units(self, questions: int) -> int:
        """What a sharded kind's fixed batches hold (batch_size of them each), of a split of `questions`."""
        raise NotImplementedError(f"a {self.kind} stage samples in no fixed batches")

    def plan_note(self) -> str | None:
        """A line `distillc plan` prints under the stage, when the user must know something."""
        return None

    def sizes_context(self) -> Context | None:
        """What this stage asks of its model's context (None: nothing the compiler can judge)."""
        return self.context

    def ref_value(self, pl, sid: str, field: str):
        """What a reference field names (None: nothing); a kind may derive an unset one."""
        return getattr(self, field)

    def build_inputs(self, sid: str, spec_name: str, build_dir: str) -> dict[str, str]:
        """Files of the build (not of a stage) this stage reads."""
        return {}

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        """Model or stage name -> report role, as this stage's wiring says (report: roles())."""
        return {}
