"""No import cycle among the modules of ``orchestrations``, ``entities`` and ``runtime``.

A cycle makes a module's meaning depend on which of the two was imported first, and hides a
concept that wants a module of its own. The graph is built from the source with ``ast``:
every ``import``/``from ... import`` a module runs, at module level or inside a function
(a function-level import is a cycle put off, not removed); only imports under
``if TYPE_CHECKING:`` are left out (they never run). A module's package ``__init__`` runs
before it whatever it imports, so that implicit edge is not counted; an explicit
``from package import name`` is an edge to the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrations", "entities", "runtime")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (any depth), skipping ``if TYPE_CHECKING:`` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The known modules ``node`` makes run, as seen from ``module``."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return {name for name in names if name in known}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the three packages it imports."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(module, is_package, node, known)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    graph = import_graph()
    assert "runtime._shard" in graph and "orchestrations._executor" in graph
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    tree = ast.parse("def f():\n    from ._b import x\n")
    edges = set().union(*(_targets("p._a", False, n, {"p._a", "p._b"}) for n in _imports(tree)))
    assert edges == {"p._b"}
    assert find_cycles({"p._a": {"p._b"}, "p._b": {"p._c"}, "p._c": {"p._a"}, "p._d": {"p._a"}}) == [
        ["p._a", "p._b", "p._c"]
    ]


def test_type_checking_imports_are_not_edges():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import x\n")
    assert [n for n in _imports(tree) if _targets("p._a", False, n, {"p._a", "p._b"})] == []
