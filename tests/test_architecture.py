"""The floors of ARCHITECTURE.md, checked: every import inside src/imgclf (function-level ones
included) points to the same floor or one below, and no module imports itself round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module is on the floor of the longest name here that it is or lies under
FLOORS = [
    ("ground", ["imgclf._tf", "imgclf._version", "imgclf.errors", "imgclf.interrupts", "imgclf.monitors",
                "imgclf.runs", "imgclf.config", "imgclf.layers"]),
    ("data", ["imgclf.data"]),
    ("reports", ["imgclf.reports"]),
    ("models", ["imgclf.catalog", "imgclf.models", "imgclf.saved", "imgclf.inference", "imgclf.exported",
                "imgclf.gradcam"]),
    ("training", ["imgclf.training"]),
    ("jobs", ["imgclf.tuning", "imgclf.evaluate", "imgclf.predict", "imgclf.comparison", "imgclf.inspect",
              "imgclf.export", "imgclf.explain"]),
    # the package root re-exports the API (imgclf.train, ...): it stands on the API's floor
    ("api", ["imgclf", "imgclf.api"]),
    ("commands", ["imgclf.cli", "imgclf.__main__"]),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "imgclf").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The imgclf modules ``name`` imports, at its top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from imgclf import interrupts` imports the module imgclf.interrupts; `from imgclf
            # import __version__` imports the package root itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from imgclf.x import name`: the module is imgclf.x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def floor(name: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            under = name.startswith(prefix + ".") and prefix != "imgclf"  # the root: only itself
            if (name == prefix or under) and len(prefix) > best:
                best, level = len(prefix), i
    return level


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_every_module_has_a_floor():
    assert [name for name in GRAPH if floor(name) is None] == []


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    up = sorted(t for t in GRAPH[name] if floor(t) > floor(name))
    assert up == [], f"{name} ({FLOORS[floor(name)][0]}) imports a higher floor: {up}"


def test_no_import_circle():
    """Tarjan's strongly connected components: any with two modules or more is a circle."""
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert circles == []
