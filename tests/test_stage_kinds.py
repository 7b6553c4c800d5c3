"""A stage kind is one class: the planner, the renderer and the report take everything from it.

A kind defined here, in the test, and known to no compiler module gets its rule, its inputs
(from its refs and the upstream kinds' passed-on outputs), its outputs, its resources and,
as a model-producing kind, a place in the report's lineage, without any other list to edit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import Field

from compiler.spec.contract import StageConfig
from compiler.plan import build_plan
from compiler.plan.render import render
from compiler.spec.schema import Spec
from compiler.spec.stagekind import Output, Ref, Resources, Role, StageBase
from compiler.spec.stages import STAGE_CLASSES, Stage

REPO = Path(__file__).resolve().parent.parent
COMPILER = REPO / "compiler"


class WhiteBoxStage(StageBase):
    """A throwaway kind: trains a student on a teacher's samples, writes a model and a log."""

    kind: Literal["white_box"]
    model: str = Field(..., description="The student.")
    teacher: str = Field(..., description="A generate stage.")
    beta: float = Field(0.5, ge=0, le=1)

    outputs: ClassVar = {"model": Output("model/", passed_on=True), "log": Output("wb_log.jsonl")}
    refs: ClassVar = (Ref("model"), Ref("teacher", ("generate",)))
    default_resources: ClassVar = Resources(gpus=0, cpus=2, mem_mb=3000, runtime_min=45)
    produces_model: ClassVar = True
    starts_from: ClassVar = "model"
    roles: ClassVar = (Role("white_box", "white-box student", 2.5, ("sft", "teacher")),)

    def report_roles(self, sid: str, stages: dict) -> dict[str, str]:
        return {sid: "white_box"}


SPEC = {
    "name": "kinds",
    "models": {"teacher": {"init": {}}, "student": {"init": {}}},
    "stages": {
        "samples": {"kind": "generate", "model": "teacher", "samples_per_temperature": 1},
        "wb": {"kind": "white_box", "model": "student", "teacher": "samples", "beta": 0.25},
        "wb_samples": {"kind": "generate", "model": "wb"},  # its model is usable like an sft/rl one
        "eval_wb": {"kind": "eval", "model": "wb"},
    },
}


class KindsSpec(Spec):
    """The spec schema with one more kind in the stage union: the only place the test names it."""

    stages: dict[str, Stage | WhiteBoxStage] = Field(..., min_length=1)


def test_a_kind_defined_outside_the_compiler_gets_its_rule(tmp_path):
    spec = KindsSpec.model_validate(SPEC)
    plan = build_plan(spec, file=str(tmp_path / "kinds.yaml"), root=tmp_path)
    wb = plan.job("wb")
    assert wb.outputs == {"model": "runs/kinds/wb/model/", "log": "runs/kinds/wb/wb_log.jsonl"}
    assert wb.inputs == {"teacher_responses": "runs/kinds/samples/responses.jsonl"}
    assert wb.config.models["model"].source == "init" and wb.config.upstream == {"teacher": ["samples"]}
    assert (wb.resources.cpus, wb.resources.mem_mb, wb.resources.runtime_min) == (2, 3000, 45)
    assert plan.job("wb_samples").inputs == {"model": "runs/kinds/wb/model"}
    assert plan.job("wb_samples").config.models["model"].base == "student"
    [order] = [[j.id for j in plan.jobs]]
    assert order.index("samples") < order.index("wb") < order.index("eval_wb") and order[-1] == "report"

    report = plan.job("report").config
    assert report.roles["wb"] == "white_box" and report.lineage["wb"] == ["wb", "student"]
    assert (
        report.inputs["wb_log"] == "runs/kinds/wb/wb_log.jsonl"
        and report.inputs["lock"] == "build/kinds/spec.lock.json"
    )

    render(plan, tmp_path)
    workflow = (tmp_path / "build/kinds/workflow.smk").read_text()
    rule = workflow[workflow.index("rule wb:") : workflow.index("rule", workflow.index("rule wb:") + 5)]
    assert 'teacher_responses="runs/kinds/samples/responses.jsonl"' in rule
    assert 'model=directory("runs/kinds/wb/model")' in rule and 'log="runs/kinds/wb/wb_log.jsonl"' in rule
    assert "runtime.white_box --config {input.config}" in rule
    resources = json.loads((tmp_path / "build/kinds/resources.json").read_text())["wb"]
    assert resources["resources"]["mem_mb"] == 3000 and resources["threads"] == 2
    written = yaml.safe_load((tmp_path / "build/kinds/stages/wb.yaml").read_text())
    assert written["params"]["beta"] == 0.25 and written["kind"] == "white_box"


def test_the_stage_config_is_typed_by_its_kind(tmp_path):
    """`params` comes back as the kind's class, and a config whose params belong to another kind is refused."""
    from compiler.plan.load import load_spec_with_positions

    spec, positions = load_spec_with_positions(REPO / "specs" / "tiny.yaml")
    plan = build_plan(spec, positions, str(REPO / "specs" / "tiny.yaml"), tmp_path)
    for job in plan.jobs:
        data = job.config.model_dump(mode="json")
        again = type(job.config).model_validate(data)
        assert type(again.params) is STAGE_CLASSES[job.config.kind] and again.params == job.config.params
    data = plan.job("student_sft").config.model_dump(mode="json")
    try:
        StageConfig.model_validate(data | {"kind": "rl"})
    except ValueError as exc:
        assert "rl" in str(exc)
    else:
        raise AssertionError("sft params accepted under kind rl")


def test_one_list_of_kinds_and_no_kind_names_elsewhere_in_the_compiler():
    """The registry is built in compiler/spec/stages.py alone; no other compiler module spells a kind's name
    as a string (a list or an if-chain over kinds would be one more place to edit for a new kind)."""
    kinds = sorted(STAGE_CLASSES, key=len, reverse=True)
    literal = re.compile(r"""["'](%s)["']""" % "|".join(kinds))
    found = {}
    for path in sorted(COMPILER.rglob("*.py")):
        if path.name == "stages.py":
            continue
        hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
        if hits:
            found[path.name] = hits
    assert found == {}, f"kind names outside compiler/spec/stages.py: {found}"
    registries = [
        p.name
        for p in COMPILER.rglob("*.py")
        if "STAGE_CLASSES: " in p.read_text() or "STAGE_CLASSES = " in p.read_text()
    ]
    assert registries == ["stages.py"]
