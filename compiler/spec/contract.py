"""What the compiler hands a runtime stage: one resolved stage config (build/<spec>/stages/<id>.yaml).

Not written by users: the planner fills it in (compiler/plan.py) and `python -m runtime.<kind>`
reads it back through the same classes, so both sides agree on every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from .layout import build_dir
from .schema import InitModel, TaskSpec
from .shards import SHARD_INPUT, Shard
from .stagekind import BENCHMARK, LOCK, StageBase, Strict, input_key
from .stages import REPORT, STAGE_CLASSES


class ModelRef(Strict):
    """A model reference after planning: where a runtime finds the weights.

    runtime/lib/model_folders.py's `local_folder` turns any of these (but `init`) into the folder or hub
    id that transformers and lm-eval load: a GGUF file is dequantised and a pruned model cut once, into
    a cache shared by every stage.
    """

    name: str = Field(..., description="The model id or stage id it came from.")
    source: Literal["path", "package", "pruned", "init", "stage"]
    path: str | None = None  # hub id, local dir, or a stage's output dir
    package: str | None = None  # an installed package whose folder holds the model (source: package)
    gguf_file: str | None = None  # a GGUF file inside the folder or hub repo (source: path or package)
    parent: ModelRef | None = None  # the model a pruned one keeps layers of (source: pruned)
    layers: int | None = None  # how many (source: pruned)
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
    spec_seed: int = Field(
        ...,
        description="The spec's seed: task data and init models derive from it, "
        "so every stage sees the same questions and the same base weights.",
    )
    run_dir: str = Field(..., description="runs/<spec>/ (relative to the workflow root).")
    out_dir: str = Field(..., description="This stage's output folder.")
    task: TaskSpec
    models: dict[str, ModelRef] = Field({}, description="Role -> model (model, policy, reward_model ...).")
    inputs: dict[str, str] = Field({}, description="Input name (declared by the stage classes' refs) -> path.")
    outputs: dict[str, str] = Field({}, description="Name -> declared output path.")
    upstream: dict[str, list[str]] = Field({}, description="Role -> upstream stage ids (report: kind -> stage ids).")
    # Typed per kind: `kind` picks the stage class (compiler/spec/stages.py) that validates the fields.
    params: SerializeAsAny[StageBase] = Field(..., description="The stage's own fields, as its stage class.")
    # Left out of the YAML when unset: a stage that is not sharded keeps the bytes it had before shards.
    shard: Shard | None = Field(
        None,
        description="A shard job's part of a sharded stage (compiler/spec/shards.py); its out_dir and outputs "
        "are the shard's own folder. Unset on an unsharded stage and on a sharded stage's join.",
        exclude_if=lambda s: s is None,
    )

    @field_validator("params", mode="before")
    @classmethod
    def _by_kind(cls, value, info):
        if isinstance(value, dict):
            kind = info.data.get("kind")
            if kind not in STAGE_CLASSES:
                raise ValueError(f"unknown stage kind {kind!r}")
            return STAGE_CLASSES[kind].model_validate(value)
        return value

    @model_validator(mode="after")
    def _same_kind(self):
        if self.params.kind != self.kind:
            raise ValueError(f"params of a {self.params.kind} stage in a {self.kind} stage config")
        return self

    def stage(self):
        """The stage's own validated fields, as its schema class."""
        return self.params

    @property
    def stage_dir(self) -> str:
        """The stage's own folder, runs/<spec>/<id>/: its out_dir, except in a shard job (whose is inside it)."""
        return f"{self.run_dir}/{self.id}"

    @property
    def label(self) -> str:
        """The job as people read it (terminal lines, failures, `distillc status`): the stage id, and a
        shard job's place ("teacher_samples shard 1/2")."""
        return f"{self.id} {self.shard.label}" if self.shard else self.id

    @property
    def joins(self) -> bool:
        """Is this the join of a sharded stage (it reads its shards' outputs and writes the stage's)?"""
        return self.shard is None and self.params.shard_count() > 1

    def shard_inputs(self, output: str) -> list[str]:
        """A join's inputs: every shard's `output` (or its BENCHMARK file), in shard order."""
        if not self.joins:
            raise UndeclaredInput(f"stage {self.id!r} is no join of shards")
        return [self.inputs[input_key(SHARD_INPUT, output, k)] for k in range(1, self.params.shard_count() + 1)]

    def build_file(self, name: str) -> Path:
        """A file of this spec's build (compiler/spec/layout.py), e.g. TRACKING_FILE, LOCK_FILE."""
        return Path(build_dir(self.spec_name)) / name

    # ------------------------------------------------------------------ inputs, by what the kind declares
    def input(self, field: str, output: str = "model", index: int | None = None) -> str:
        """The path of an input the kind declares: a reference field (`Ref`) and an output its upstream
        kinds pass on. KeyError when this stage's config has none (the reference was unset)."""
        return self.inputs[self._declared(field, output, index)]

    def input_or_none(self, field: str, output: str = "model", index: int | None = None) -> str | None:
        """`input`, or None when this stage's config has none (an optional or alternative reference)."""
        return self.inputs.get(self._declared(field, output, index))

    def build_input(self, name: str) -> str:
        """A file of the build, not of a stage, that the kind declares (its `build_inputs`)."""
        if name not in self.params.build_inputs(self.id, self.spec_name, ""):
            raise UndeclaredInput(f"a {self.kind} stage declares no build input {name!r}")
        return self.inputs[name]

    def _declared(self, field: str, output: str, index: int | None) -> str:
        """The input's key (compiler.spec.stagekind.input_key); an input the kind does not declare is a bug."""
        ref = next((r for r in self.params.refs if r.field == field), None)
        if ref is None:
            raise UndeclaredInput(f"a {self.kind} stage has no reference field {field!r}")
        passed = (
            {"model"}
            if ref.to_model
            else {n for k in ref.kinds for n, o in STAGE_CLASSES[k].outputs.items() if o.passed_on}
        )
        if output not in passed:
            raise UndeclaredInput(f"a {self.kind} stage's {field!r} passes on no {output!r} (only {sorted(passed)})")
        return input_key(field, output, index)


class ReportConfig(StageConfig):
    """The report's config: what the planner knows of the pipeline, so the report never re-derives it."""

    roles: dict[str, str] = Field(
        {}, description="Model or stage name -> report role (compiler.spec.stages.report_roles)."
    )
    lineage: dict[str, list[str]] = Field(
        {}, description="Model name -> [it, the weights it started from, ..., a model id]."
    )

    def stage_file(self, sid: str, output: str) -> str | None:
        """An upstream stage's output (or its BENCHMARK file) as the report reads it; None when absent."""
        kind = next((k for k, ids in self.upstream.items() if sid in ids), None)
        if kind is None:
            raise UndeclaredInput(f"the report has no upstream stage {sid!r}")
        if output != BENCHMARK and output not in STAGE_CLASSES[kind].outputs:
            raise UndeclaredInput(f"a {kind} stage has no output {output!r}")
        return self.inputs.get(input_key(sid, output, bare_model=False))

    def stage_files(self, output: str) -> dict[str, str]:
        """Upstream stage id -> its `output`, for every upstream stage whose kind writes one."""
        return {
            sid: self.inputs[key]
            for kind, ids in self.upstream.items()
            if output in STAGE_CLASSES[kind].outputs
            for sid in ids
            if (key := input_key(sid, output, bare_model=False)) in self.inputs
        }

    def lock_file(self) -> str | None:
        return self.inputs.get(LOCK)


class UndeclaredInput(ValueError):
    """A stage read an input its kind does not declare: a bug in the stage program, not a user error."""


def config_class(kind: str) -> type[StageConfig]:
    return ReportConfig if kind == REPORT else StageConfig


def read_config(data) -> StageConfig:
    """A stage config from its YAML data, as the class its kind needs."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return config_class(str(kind)).model_validate(data)
