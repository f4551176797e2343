"""The package's layering, read from its source: no import cycle, and imports point one way.

Every import counts: at module level, inside a function, and under `if TYPE_CHECKING:` (a cycle
hidden there is still a cycle of the design). Modules are read with `ast`, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import modelshrink

PACKAGE = Path(modelshrink.__file__).parent

Graph = dict[str, set[str]]


def module_names(root: Path) -> dict[Path, str]:
    """Each .py file under the package folder `root` → its dotted module name (a package is its __init__)."""
    return {
        p: ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted(root.rglob("*.py"))
    }


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: the module itself and, for `from`, each imported name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: `from . import x` in a.b.c means a.b; in the package a.b itself, a.b
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path) -> Graph:
    """module → the modules of the same package it imports, resolved to the deepest module that exists.

    An import of a module's own parent package is left out: Python runs the parent first anyway.
    """
    names = module_names(root)
    known = set(names.values())
    graph: Graph = {m: set() for m in known}
    for path, module in names.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _targets(node, module, path.name == "__init__.py"):
                while name and name not in known:  # `from pkg.mod import func` → pkg.mod
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def edges_between(graph: Graph, src: str, dst: str) -> list[str]:
    """Imports from the subpackage `src` (or its modules) into `dst` (or its modules), as "a -> b"."""

    def inside(module: str, pkg: str) -> bool:
        return module == pkg or module.startswith(pkg + ".")

    return sorted(f"{m} -> {t}" for m, ts in graph.items() if inside(m, src) for t in ts if inside(t, dst))


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


def test_the_checker_sees_cycles_through_function_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.b import g\n    return g\n",  # function-level
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.c import h\n",
        "pkg/sub/__init__.py": "from . import c\n",  # the package's own module: not a cycle
        "pkg/sub/c.py": "from ..a import f\nimport pkg.sub\n",  # relative, and its own parent package
        "pkg/d.py": "import pkg.a\n",  # imports into the cycle, is not part of it
    })  # fmt: skip
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.c"} and graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert edges_between(graph, "pkg.sub", "pkg.a") == ["pkg.sub.c -> pkg.a"]
    (pkg / "a.py").write_text("")
    assert cycles(import_graph(pkg)) == []


def test_the_checker_reads_the_real_package() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and "modelshrink.store.sqlite" in graph["modelshrink.store"]
    assert "modelshrink.store" in graph["modelshrink.report.html"]


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(import_graph(PACKAGE)) == []


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("export", "techniques"),  # techniques declare their export format; export knows no technique
        ("report", "runner"),  # the report reads the store only
        ("store", "runner"),  # the store is below both of its users
        ("store", "report"),
    ],
)
def test_imports_point_one_way(src: str, dst: str) -> None:
    graph = import_graph(PACKAGE)
    assert edges_between(graph, f"modelshrink.{src}", f"modelshrink.{dst}") == []
