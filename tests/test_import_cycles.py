"""No import cycles among compiler/ and runtime/ modules, imports inside functions included (an import
inside a function hides a cycle from Python, not from the reader), and no private name taken from
another module. Reads the source (ast): nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("compiler", "runtime")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            found.append((target, names, node.lineno))
            # `from package import module` imports the module
            found += [(f"{target}.{n}", [], node.lineno) for n in names if f"{target}.{n}" in known]
    return [(t, n, line) for t, n, line in found if t in known]


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: {t for t, _, _ in imports(name, path, set(mods)) if t != name} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_taken_from_another_module():
    mods = all_modules()
    taken = [
        f"{path.relative_to(REPO)}:{line}: {n} from {target}"
        for name, path in mods.items()
        for target, names, line in imports(name, path, set(mods))
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != name
    ]
    assert taken == []
