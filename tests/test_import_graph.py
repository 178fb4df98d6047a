"""The package's import drawing: no cycle between modules, and the proxy never imports the pages.

Every import counts, wherever it is written: at module level, inside a function (a lazy import
still ties the two modules together) and under `TYPE_CHECKING`. `from pkg import sub` is an
edge to the submodule `pkg.sub`, not to `pkg/__init__.py` (which every submodule's import runs
anyway, so counting it would draw a cycle through every package that re-exports its parts).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bindify_appliance"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {target for target in out if target in modules and target != name}


@functools.cache  # one walk for every test of the module (the tests only read it)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def test_the_walker_sees_the_package() -> None:
    graph = _graph()
    assert len(graph) > 100
    assert "bindify_appliance.store.models" in graph["bindify_appliance.store.db"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    drawn = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(_cycles(drawn)) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    cycles = list(_cycles(_graph()))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_proxy_imports_nothing_from_the_web_ui() -> None:
    graph = _graph()
    edges = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith("bindify_appliance.proxy")
        for target in targets
        if target.startswith("bindify_appliance.web")
    )
    assert edges == []
