"""Stage modules never import each other: what two stages share lives in a runtime library
(answers, checkpoints, sampling, common, models, ...), so changing one stage cannot break another.
Like the compiler's no-torch test, this reads the source (ast), so it also sees imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from compiler.spec.stages import KINDS

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"


def runs_as_stage(tree: ast.Module) -> bool:
    """A module with `if __name__ == "__main__":` is a stage CLI that a rule runs (`python -m runtime.<kind>`)."""
    return any(
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def imported_runtime_modules(tree: ast.Module) -> set[str]:
    """Names of runtime modules imported anywhere in the module (relative or absolute)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import x, y
                names |= {a.name for a in node.names}
            elif node.level == 1:  # from .x import y
                names.add(node.module.split(".")[0])
            elif node.module == "runtime":  # from runtime import x
                names |= {a.name for a in node.names}
            elif (node.module or "").startswith("runtime."):  # from runtime.x import y
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("runtime.")}
    return names


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(RUNTIME.rglob("*.py"))}


def test_every_stage_kind_is_a_stage_module():
    """The detection below sees every kind's CLI (else the next test would check nothing for it)."""
    trees = modules()
    assert {k for k in KINDS if k in trees and runs_as_stage(trees[k])} == set(KINDS)


def test_no_stage_module_imports_another():
    trees = modules()
    stages = {name for name, tree in trees.items() if runs_as_stage(tree)} | set(KINDS)
    crossing = {
        name: sorted(imported_runtime_modules(tree) & (stages - {name}))
        for name, tree in trees.items()
        if name in stages
    }
    assert {k: v for k, v in crossing.items() if v} == {}


def test_the_check_sees_the_imports_it_forbids():
    """The import reader finds every spelling (a test that cannot fail would prove nothing)."""
    tree = ast.parse(
        "from . import generate, models\nfrom .sft import x\nimport runtime.rl\n"
        "def f():\n    from runtime.eval import y\n    from runtime import report\n"
    )
    assert imported_runtime_modules(tree) == {"generate", "models", "sft", "rl", "eval", "report"}
