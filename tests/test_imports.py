"""No import cycles among the modules of the ``rlcourse`` package (``rlcourse/grading`` included).

The graph is read from the source with ``ast``, so it holds every import, including those
inside functions: an import moved into a function to dodge a cycle still counts, and code
that both sides need belongs in a lower-level module instead. An edge goes to the module
named (``from pkg import sub`` to ``pkg.sub`` when that is a module, otherwise to
``pkg``); the parent packages Python imports on the way are not edges.

Run as a script (``python tests/test_imports.py``) it prints the cycles, or that there are none.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    """One import statement of ``source`` that loads module ``target``."""

    source: str
    target: str
    path: Path
    line: int
    in_function: bool

    def where(self) -> str:
        place = "inside a function" if self.in_function else "module level"
        return f"{self.path.as_posix()}:{self.line} ({place})"


def package_modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is_package)}`` for every ``.py`` file under ``root/package``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph(root: Path, package: str) -> tuple[list[str], list[Import]]:
    """The package's modules and every import between two of them (module level and in functions)."""
    modules = package_modules(root, package)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = []
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = {
            id(node)
            for func in ast.walk(tree) if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in {resolve(n) for n in names if n == package or n.startswith(package + ".")}:
                if target is not None and target != module:
                    edges.append(Import(module, target, path.relative_to(root), node.lineno, id(node) in in_function))
    return sorted(modules), edges


def import_cycles(modules: list[str], edges: list[Import]) -> list[list[str]]:
    """The strongly connected components with more than one module (each one or more cycles), sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:   # Tarjan; the package is a few dozen modules deep at most
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
                components.append(sorted(component))

    for v in modules:
        if v not in index:
            visit(v)
    return sorted(components)


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    previous = {start: start}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in previous:
                previous[w] = v
                if w == goal:
                    path = [w]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                queue.append(w)
    return []


def describe_cycles(modules: list[str], edges: list[Import]) -> str:
    """A report naming, for each cycle, the modules that import each other and the lines that do it."""
    components = import_cycles(modules, edges)
    if not components:
        return f"no import cycles among {len(modules)} modules"
    lines = [f"{len(components)} import cycle(s):"]
    for component in components:
        members = set(component)
        inside = [e for e in edges if e.source in members and e.target in members]
        graph = {m: {e.target for e in inside if e.source == m} for m in component}
        pairs = sorted({tuple(sorted((e.source, e.target))) for e in inside
                        if e.source in graph[e.target]})
        lines.append("")
        lines.append(f"cycle among {', '.join(component)}")
        for a, b in pairs:
            lines.append(f"  {a} <-> {b}")
        if not pairs:    # a longer ring: show one loop through its first module
            first = component[0]
            loop = min((_shortest_path(graph, w, first) for w in graph[first]), key=len)
            lines.append("  " + " -> ".join([first, *loop]))
        for e in sorted(inside, key=lambda e: (e.source, e.target, e.line)):
            lines.append(f"    {e.source} imports {e.target}: {e.where()}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tests
def test_rlcourse_has_no_import_cycles() -> None:
    modules, edges = import_graph(ROOT, "rlcourse")
    assert "rlcourse.grading" in modules and "rlcourse.runner" in modules   # the whole package is read
    assert not import_cycles(modules, edges), describe_cycles(modules, edges)


def test_the_check_finds_cycles_through_function_level_and_relative_imports(tmp_path: Path) -> None:
    """A cycle hidden in a function, a relative import and ``from pkg import sub`` are all found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import low\n")
    (pkg / "low.py").write_text("import os\n")
    (pkg / "a.py").write_text("from pkg.low import x\n\ndef f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..sub import d\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub.e import y\n")
    (pkg / "sub" / "e.py").write_text("import pkg.sub.c\n")
    modules, edges = import_graph(tmp_path, "pkg")
    assert import_cycles(modules, edges) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d", "pkg.sub.e"]]
    report = describe_cycles(modules, edges)
    assert "pkg.a <-> pkg.b" in report
    assert "pkg.a imports pkg.b: pkg/a.py:4 (inside a function)" in report
    assert "pkg.b imports pkg.a: pkg/b.py:1 (module level)" in report
    assert "pkg.sub.c -> pkg.sub.d -> pkg.sub.e -> pkg.sub.c" in report
    assert "pkg.low" not in report and "pkg <->" not in report


if __name__ == "__main__":
    print(describe_cycles(*import_graph(ROOT, "rlcourse")))
    sys.exit(1 if import_cycles(*import_graph(ROOT, "rlcourse")) else 0)
