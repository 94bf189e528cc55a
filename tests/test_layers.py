"""The layers of docs/DESIGN.md, read from the source with `ast` (no import runs).

`service` (the process) sits on the core (`workers`, `shard_config`); the core never imports
`service`; the simulator imports nothing of pidelta, so a bug shared by both sides cannot
pass every test; and no production module takes part in an import cycle, counting the
imports inside functions.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "workers", "shard_config", "mock_pi")
FORBIDDEN = {
    "workers": {"service", "mock_pi"},
    "shard_config": {"service", "workers", "mock_pi"},
    "mock_pi": {"service", "workers", "shard_config"},
    "service": {"mock_pi"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every pidelta module `path` imports, at any depth of the file."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = (package or module_name(path)).split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def production_modules() -> dict[str, set[str]]:
    modules = {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    # Keep only names that are modules (`from a import b` may name a function of a).
    return {name: {i for i in imports_of(path) if i in modules} for name, path in modules.items()}


def test_the_core_and_the_simulator_import_nothing_above_them() -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in production_modules().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN[name.split(".")[0]]
    )
    assert wrong == [], wrong


def test_no_production_module_is_in_an_import_cycle() -> None:
    graph = production_modules()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == [], cycles


def test_every_production_module_imports() -> None:
    """A name moved to another module and left imported from the old one fails here, not in
    the first worker that reaches that import (a refactor once broke `pidelta run` so)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            if not name.endswith("__main__"):
                importlib.import_module(name)
