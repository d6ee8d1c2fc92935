"""No import cycle in ``worker/``: neither between files nor between sub-packages.

Every ``import`` / ``from ... import`` of a ``worker`` module counts, wherever
it stands: at the top, inside a function (a function-local import hides a
cycle, it does not remove it) or under ``TYPE_CHECKING``. Files are nodes of
the file graph. In the package graph a module belongs to its sub-package
(``worker.store``, ``worker.ops``, ...); a module directly in ``worker/``
(``cli.py``, ``demo.py``, ``worker/__init__.py`` ...) is a node of its own:
the command line sits on top of everything and is no package anyone imports.

The graph is read with ``ast`` from the sources, nothing is imported; the
detector is itself tested on a planted cycle so the checks cannot pass
vacuously. A failure names every edge of the cycle (``file:line -> module``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: (importing module, line) -> imported module
Edges = dict[str, dict[str, int]]


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``root / package``."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or its longest prefix that is a module."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name a (possibly relative) ``from ... import`` reads from."""
    base = node.module or ""
    if not node.level:
        return base
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*anchor, *([base] if base else [])])


def _targets(module: str, path: Path, node: ast.AST, modules: Mapping[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(module, path, node)
        # ``from worker.store import gateway`` imports a module; ``from m import X`` m.
        names = [f"{base}.{alias.name}" for alias in node.names]
    else:
        return []
    found = (_resolve(name, modules) for name in names)
    return [target for target in found if target is not None and target != module]


def import_graph(root: Path, package: str) -> Edges:
    """Every module of ``package`` -> the package's modules it imports (first line)."""
    modules = _modules(root, package)
    edges: Edges = {}
    for module, path in modules.items():
        out = edges.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            lineno = getattr(node, "lineno", 0)
            for target in _targets(module, path, node, modules):
                out[target] = min(out.get(target, lineno), lineno)
    return edges


def package_of(module: str, package: str, root: Path) -> str:
    """The sub-package ``module`` lives in; a module directly in ``package`` is its own."""
    parts = module.split(".")
    if len(parts) >= 2 and (root / package / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def file_cycles(root: Path, package: str) -> list[str]:
    """One line per file-level cycle, naming each edge inside it."""
    edges = import_graph(root, package)
    return [_describe(component, edges, lambda m: m) for component in cycles(edges)]


def package_cycles(root: Path, package: str) -> list[str]:
    """One line per package-level cycle, naming the file edges that make it."""
    edges = import_graph(root, package)
    graph: dict[str, set[str]] = {}
    for source, targets in edges.items():
        graph.setdefault(package_of(source, package, root), set())
        for target in targets:
            a, b = package_of(source, package, root), package_of(target, package, root)
            if a != b:
                graph[a].add(b)
    return [
        _describe(component, edges, lambda m: package_of(m, package, root))
        for component in cycles(graph)
    ]


def _describe(component: list[str], edges: Edges, unit: object) -> str:
    assert callable(unit)
    members = set(component)
    crossing = [
        f"{source}:{line} -> {target}"
        for source, targets in sorted(edges.items())
        for target, line in sorted(targets.items())
        if unit(source) in members and unit(target) in members and unit(source) != unit(target)
    ]
    return f"cycle {' <-> '.join(component)}: " + "; ".join(crossing)


def private_imports(root: Path, package: str) -> list[str]:
    """``from worker.x import _name`` across modules: a private name used from outside.

    A module whose name starts with ``_`` (the compiled ``worker._core``, known
    by its ``.pyi`` stub) is no private name.
    """
    modules = _modules(root, package)
    stubs = {".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.pyi")}
    found = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, path, node)
            for alias in node.names:
                name = f"{source}.{alias.name}"
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source.startswith(package) and name not in modules.keys() | stubs:
                    found.append(f"{module}:{node.lineno} imports {name}")
    return found


def test_no_import_cycle_between_files_of_worker() -> None:
    assert file_cycles(ROOT, "worker") == []


def test_no_import_cycle_between_sub_packages_of_worker() -> None:
    assert package_cycles(ROOT, "worker") == []


def test_no_module_imports_another_modules_private_name() -> None:
    assert private_imports(ROOT, "worker") == []


def _plant(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A package ``pkg`` with a function-local file cycle (a <-> b in ``low``), a
    package cycle through it (``low`` -> ``high`` -> ``low``) and a private import."""
    _plant(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/cli.py": "from pkg.high import h\n",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "from pkg.low.b import B\n",
            "pkg/low/b.py": "def f():\n    from . import a\n    from ..high.h import _hidden\n",
            "pkg/high/__init__.py": "",
            "pkg/high/h.py": "import pkg.low.a\n_hidden = 1\n",
        },
    )
    return tmp_path


def test_the_detector_finds_a_planted_function_local_cycle(planted: Path) -> None:
    found = file_cycles(planted, "pkg")
    assert found == [
        "cycle pkg.high.h <-> pkg.low.a <-> pkg.low.b: "
        "pkg.high.h:1 -> pkg.low.a; pkg.low.a:1 -> pkg.low.b; "
        "pkg.low.b:3 -> pkg.high.h; pkg.low.b:2 -> pkg.low.a"
    ]


def test_the_detector_finds_a_planted_package_cycle(planted: Path) -> None:
    assert package_cycles(planted, "pkg") == [
        "cycle pkg.high <-> pkg.low: pkg.high.h:1 -> pkg.low.a; pkg.low.b:3 -> pkg.high.h"
    ]


def test_the_detector_finds_a_planted_private_import(planted: Path) -> None:
    assert private_imports(planted, "pkg") == ["pkg.low.b:3 imports pkg.high.h._hidden"]
