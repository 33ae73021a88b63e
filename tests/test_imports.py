"""No import cycles among the project's modules.

The graph is read from the source (``ast``), never by importing: every module under
``pipeline_sdk/``, ``exporters/``, ``dashboards/`` and ``scripts/`` is a node, and each
import of another of them is an edge, relative imports resolved against the importing
module's package.  ``from pkg import name`` is an edge to the submodule ``pkg.name`` when
there is one, else to ``pkg`` itself.

Imports inside a function count (they run when it is called, so a circle through them is
still a circle); imports under ``if TYPE_CHECKING:`` do not (they never run, and only
annotations read them).  Importing a submodule runs its package's ``__init__`` too, but
that is not counted as an edge: a package whose ``__init__`` re-exports its modules would
otherwise be a circle with each of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCANNED = ("pipeline_sdk", "exporters", "dashboards", "scripts")


def module_name(path: Path, root: Path) -> str:
    """``pipeline_sdk/read/__init__.py`` -> ``pipeline_sdk.read``; ``a/b.py`` -> ``a.b``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: those under ``if TYPE_CHECKING:`` are skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch runs
                yield from _imports_in(child)
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def _package_of(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    if level > 1:
        if level - 1 >= len(parts):
            raise ValueError(f"{module}: a relative import of {level} dots goes above the top package")
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def _known(name: str, modules: set[str]) -> str | None:
    """``name`` or its longest prefix that is a module of the graph (``a.b.c`` of ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path, folders: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of the graph it imports, for every ``.py`` file under ``folders``."""
    files = {
        module_name(path, root): path
        for folder in folders
        for path in sorted((root / folder).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = _package_of(module, is_package, node.level)
                    base = f"{package}.{base}" if base and package else base or package
                # ``from pkg import sub``: the submodule when there is one, else pkg itself
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            edges.update(t for target in targets if (t := _known(target, modules)) is not None)
        edges.discard(module)  # ``from . import x`` inside x's own package __init__ is not a cycle
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, each as a path
    ``[a, b, ..., a]`` starting at the component's smallest name; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs here are small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_path_in(graph, component) for component in components)


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's smallest module, by breadth-first search."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # a component always has one


def describe(found: list[list[str]]) -> str:
    return "; ".join(" -> ".join(path) for path in found)


# ---- the project --------------------------------------------------------------------------------


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, SCANNED)
    assert len(graph) >= 60  # every module was read, not an empty folder
    assert "pipeline_sdk.client" in graph["pipeline_sdk.run"]  # edges are found
    found = cycles(graph)
    assert not found, f"import cycles: {describe(found)}"


# ---- the checker: each rule, and a cycle it must report -----------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_relative_imports_is_reported_by_name(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": "from .b import B\nA = 1\n",
            "pkg/b.py": "def late():\n    from pkg.c import C\n",  # a function's import counts
            "pkg/c.py": "from . import a\nC = 1\n",
            "pkg/d.py": "import pkg.a\n",  # imports the cycle, is not in it
        },
    )
    graph = import_graph(root, ["pkg"])
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
        "pkg.d": {"pkg.a"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe(cycles(graph)) == "pkg.a -> pkg.b -> pkg.c -> pkg.a"


def test_two_cycles_are_both_reported_and_the_shortest_path_is_named(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "one/__init__.py": "",
            "one/x.py": "from one import y\nfrom one import z\n",
            "one/y.py": "from .z import Z\n",
            "one/z.py": "from . import x\n",  # x -> z -> x is shorter than x -> y -> z -> x
            "two/__init__.py": "from two.p import P\n",
            "two/p.py": "from two import Q\n",  # a name of the package: an edge to its __init__
        },
    )
    assert cycles(import_graph(root, ["one", "two"])) == [
        ["one.x", "one.z", "one.x"],
        ["two", "two.p", "two"],
    ]


def test_type_checking_imports_and_outside_modules_are_not_edges(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from typing import TYPE_CHECKING\nimport json\nfrom . import b\n",
            "pkg/b.py": (
                "import typing\n"
                "if TYPE_CHECKING:\n    from .a import A\n"
                "if typing.TYPE_CHECKING:\n    import pkg.a\nelse:\n    import pkg.c\n"
            ),
            "pkg/c.py": "import pkg.sub.deep\n",  # no such module: its longest known prefix
            "pkg/sub/__init__.py": "",
        },
    )
    graph = import_graph(root, ["pkg"])
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.sub"},
        "pkg.sub": set(),
    }
    assert cycles(graph) == []


def test_a_relative_import_above_the_top_package_is_an_error(tmp_path: Path) -> None:
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from .. import x\n"})
    with pytest.raises(ValueError, match=r"^pkg\.a: a relative import of 2 dots goes above the top package$"):
        import_graph(root, ["pkg"])


def imports_of_the_tests(root: Path, folders: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ``tests`` it imports, for the modules under ``folders``."""
    graph = import_graph(root, (*folders, "tests"))
    return {
        m: {t for t in edges if t.split(".")[0] == "tests"}
        for m, edges in graph.items()
        if m.split(".")[0] != "tests"
    }


def test_the_product_and_the_benchmark_never_import_the_tests() -> None:
    found = imports_of_the_tests(ROOT, (*SCANNED, "bench", "demo"))
    assert {m: t for m, t in found.items() if t} == {}
    assert "pipeline_sdk.testing.kube_fake" in found  # the stand-ins the benchmark shares are scanned


def test_an_import_of_the_tests_is_reported(tmp_path: Path) -> None:
    _package(tmp_path, {"bench/__init__.py": "", "bench/b.py": "from tests.support import helper\n"})
    _package(
        tmp_path, {"tests/__init__.py": "", "tests/support/__init__.py": "", "tests/support/helper.py": ""}
    )
    assert imports_of_the_tests(tmp_path, ("bench",))["bench.b"] == {"tests.support.helper"}
