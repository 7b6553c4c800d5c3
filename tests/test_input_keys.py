"""Input names are spelled once (compiler.spec.stagekind.input_key): the planner writes them, and every stage
reads its inputs through the stage config's checked accessors, which refuse an input the kind does not
declare. The scans read the source (ast), so a stage that spells a key by hand fails here, not at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from compiler.spec.contract import UndeclaredInput, read_config
from compiler.spec.stagekind import input_key
from compiler.spec.stages import KINDS, STAGE_CLASSES
from conftest import REPO, build_spec

RUNTIME = REPO / "runtime"
ACCESSORS = ("input", "input_or_none")


def is_inputs(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "inputs"


def hand_spelled_reads(tree: ast.Module) -> list[int]:
    """Lines that read `<x>.inputs` by a written key: `[...]` with a literal or f-string, `.get(...)`, `in`."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and is_inputs(node.value)
            and isinstance(node.slice, (ast.Constant, ast.JoinedStr))
        ):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and is_inputs(node.func.value)
        ):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
            and any(is_inputs(c) for c in node.comparators)
        ):
            lines.append(node.lineno)
    return lines


def accessor_reads(tree: ast.Module) -> list[tuple[int, str, str]]:
    """(line, field, output) of every `cfg.input(...)` / `cfg.input_or_none(...)` with literal arguments."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ACCESSORS:
            args = [a.value for a in node.args[:2] if isinstance(a, ast.Constant)]
            if args:
                reads.append((node.lineno, args[0], args[1] if len(args) > 1 else "model"))
    return reads


def declares(kind: str, field: str, output: str) -> bool:
    for ref in STAGE_CLASSES[kind].refs:
        if ref.field == field:
            passed = (
                {"model"}
                if ref.to_model
                else {n for k in ref.kinds for n, o in STAGE_CLASSES[k].outputs.items() if o.passed_on}
            )
            return output in passed
    return False


def test_no_runtime_module_spells_an_input_key():
    found = {p.name: hand_spelled_reads(ast.parse(p.read_text())) for p in sorted(RUNTIME.rglob("*.py"))}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_the_scan_sees_a_hand_spelled_key():
    tree = ast.parse(
        'a = cfg.inputs["data_labels"]\nb = cfg.inputs.get(f"{s}_metrics")\nc = "x" in cfg.inputs\nd = cfg.inputs[key]'
    )
    assert hand_spelled_reads(tree) == [1, 2, 3]


def test_every_stage_reads_only_inputs_its_kind_declares():
    """A stage module's literal reads are declared by its own kind; a library's by some kind."""
    wrong = []
    for path in sorted(RUNTIME.rglob("*.py")):
        kinds = [path.stem] if path.stem in KINDS else list(KINDS)
        for line, field, output in accessor_reads(ast.parse(path.read_text())):
            if not any(declares(k, field, output) for k in kinds):
                wrong.append(f"runtime/{path.name}:{line}: {field!r} {output!r}")
    assert wrong == []
    assert not declares("rl", "votes", "responses") and declares("rl", "votes", "labels")  # the check can fail


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {
        sid: read_config(yaml.safe_load(p.read_text()))
        for sid, p in build_spec(REPO / "specs" / "demo.yaml", root).items()
    }


def test_the_planner_writes_exactly_the_keys_the_accessors_read(configs):
    """Each non-report input is `input_key(field, output, index)` of a declared reference, or a build input."""
    for sid, cfg in configs.items():
        if cfg.kind == "report":
            continue
        expected = set(cfg.params.build_inputs(cfg.id, cfg.spec_name, ""))
        for field, ids in cfg.upstream.items():
            for i, up in enumerate(ids):
                index = i if isinstance(getattr(cfg.params, field), list) else None
                kind = configs[up].kind
                expected |= {
                    input_key(field, name, index) for name, o in STAGE_CLASSES[kind].outputs.items() if o.passed_on
                }
        assert set(cfg.inputs) == expected, sid


def test_the_accessors_refuse_an_undeclared_input(configs):
    rl = next(c for c in configs.values() if c.kind == "rl" and c.params.reward_model)
    assert rl.input("reward_model") == "runs/demo/rm/model" and rl.input_or_none("votes", "labels") is None
    for field, output in (
        ("reward_model", "metrics"),
        ("votes", "responses"),
        ("data", "labels"),
        ("policy", "labels"),
    ):
        with pytest.raises(UndeclaredInput):
            rl.input_or_none(field, output)
    report = next(c for c in configs.values() if c.kind == "report")
    evals = report.upstream["eval"]
    assert report.stage_file(evals[0], "metrics").endswith("metrics.json")
    with pytest.raises(UndeclaredInput):
        report.stage_file(evals[0], "labels")
    with pytest.raises(UndeclaredInput):
        report.stage_file("no_such_stage", "metrics")
