"""The package's modules import one another without a cycle: every import
counts, the ones inside functions and under TYPE_CHECKING too (a cycle
hidden by a late import is still two modules that cannot be read, or
loaded, one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

import libhandoff

PACKAGE = Path(libhandoff.__file__).resolve().parent


def _imports_of(path: Path) -> set[str]:
    """The sibling modules ``path`` imports (``from . import x``,
    ``from .x import y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: _imports_of(path) & modules.keys() for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            if (cycle := visit(imported, [*path, name])) is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        if (cycle := visit(name, [])) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_the_modules() -> None:
    graph = _graph()
    assert {"incumbent", "successor", "listeners", "request"} <= graph.keys()
    assert "successor" in graph["listeners"]  # Inherited.successor()


def test_no_module_import_cycle() -> None:
    assert _cycle(_graph()) is None
