"""The import graph of `proxy/` is a tree of layers: no module reaches itself through imports.

Edges are read from the source (AST), not from an interpreter run, so an import that only
runs inside a function counts as much as one at the top of a file.  Imports under
`if TYPE_CHECKING:` never run; the first test leaves them out (the circle the interpreter
would walk), the second counts them too (style §12: a loop kept alive by TYPE_CHECKING is
still a loop in the design).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parent.parent / "proxy"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST, *, with_type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child) and not with_type_checking:
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]), with_type_checking=with_type_checking)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child, with_type_checking=with_type_checking)


def import_graph(package: Path, *, with_type_checking: bool = False) -> dict[str, set[str]]:
    """Module → the modules of the package it imports.  `from x import y` imports x.y when that
    is a module, else x; a name that is not a module counts as its nearest enclosing one."""
    modules = module_files(package)

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    def targets(node: ast.Import | ast.ImportFrom, package: str) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (owner(alias.name) for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            yield full if full in modules else owner(base)

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = {t for node in _import_nodes(tree, with_type_checking=with_type_checking) for t in targets(node, pkg)}
        graph[name] = found - {name, ""}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules, as one concrete circle through
    it (`a → b → c → a`), found by Tarjan's algorithm without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(_circle(graph, set(group)))
    return groups


def _circle(graph: Mapping[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no circle in {sorted(group)}")


def _report(found: list[list[str]]) -> str:
    return "import circles in proxy/:\n" + "\n".join("  " + " → ".join(c) for c in found)


def test_proxy_imports_have_no_circles() -> None:
    found = cycles(import_graph(PROXY))
    assert not found, _report(found)


def test_proxy_imports_have_no_circles_even_through_type_checking_imports() -> None:
    found = cycles(import_graph(PROXY, with_type_checking=True))
    assert not found, _report(found)


# ---------------------------------------------------------------------- the checker itself


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_circle_through_a_function_level_import_is_found_and_named(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.b import thing\n",
            "b.py": "def thing():\n    from pkg import c\n    return c\n",
            "c.py": "import pkg.a as a_module\n",
        },
    )
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_a_circle_kept_alive_by_type_checking_is_found_only_when_asked(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "models.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.loader import X\n",
            "loader.py": "from . import models\n",
        },
    )
    assert cycles(import_graph(root)) == []
    assert cycles(import_graph(root, with_type_checking=True)) == [["pkg.loader", "pkg.models", "pkg.loader"]]


def test_a_tree_of_layers_has_no_circle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "sub/__init__.py": "",
            "sub/low.py": "import json\n",
            "sub/mid.py": "from .low import json\nfrom pkg.sub import low\n",
            "top.py": "from pkg.sub.mid import json\nimport pkg.sub.low\n",
        },
    )
    assert cycles(import_graph(root)) == []


@pytest.mark.parametrize("with_type_checking", [False, True])
def test_the_graph_of_proxy_is_read(with_type_checking: bool) -> None:
    graph = import_graph(PROXY, with_type_checking=with_type_checking)
    assert "proxy.guards" in graph["proxy.rules"]
    assert "proxy.rulemodels" in graph["proxy.guards.budget"]


# The server belongs to the entry points (the CLI, serving, a worker process); the app side reads
# its scope extensions from proxy/extensions.py.
SERVER_USERS = {"proxy.cli", "proxy.serving", "proxy.worker"}  # worker: a worker process and its peer-metrics port


def test_only_the_entry_points_import_the_server() -> None:
    users = {name for name, targets in import_graph(PROXY).items() if "proxy.server" in targets}
    assert users <= SERVER_USERS, sorted(users - SERVER_USERS)
