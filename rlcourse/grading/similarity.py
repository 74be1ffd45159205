"""Flag solutions that are near-copies of the course's reference implementations.

Withholding the references while grading (:mod:`rlcourse.grading.view`) stops a solution from
*importing* them; a student can still paste their source. Such a solution is correct, so the
checks pass it: it is flagged for a human to review (``flags`` in ``summary.csv``), not failed.

Two functions are compared on their normalized syntax trees: docstrings, annotations and
comments dropped, every argument and local name replaced by its order of first appearance
(``v0``, ``v1``, ...), so renaming variables or reformatting does not hide a copy, while
attribute names (``torch.clamp``, ``.mean``) and constants still count. The similarity is
difflib's ratio of the two node sequences.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any, Mapping, Sequence

import nbformat

NEAR_COPY = 0.98
"""Similarity at and above which a solution is flagged. Short functions written independently
come close (lab 2's own solution of the four-line clipped surrogate scores 0.965 against the
reference); a pasted reference with renamed variables scores 1.0."""
MIN_NODES = 40
"""References smaller than this many syntax nodes are not compared: a one-line reward term
(lab 3's ``forward_velocity`` has 14) can only be written a few ways, so a match means nothing."""


class _Normalize(ast.NodeTransformer):
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return ast.arg(arg=self._name(node.arg), annotation=None)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(id=self._name(node.id), ctx=node.ctx)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        node.name = "f"
        node.decorator_list = []
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = "C"
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.Pass()
        return self.visit(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))


def tokens(node: ast.AST) -> list[str]:
    """The normalized node sequence of a function or class definition."""
    tree = _Normalize().visit(ast.parse(ast.unparse(node)).body[0])
    out = []
    for n in ast.walk(tree):
        fields = [f"{k}={v!r}" for k, v in ast.iter_fields(n) if isinstance(v, (str, int, float, bool)) or v is None]
        out.append(type(n).__name__ + ("(" + ",".join(fields) + ")" if fields else ""))
    return out


def similarity(a: ast.AST, b: ast.AST) -> float:
    """How alike two definitions are, from 0 to 1 (1: the same up to names and formatting)."""
    return difflib.SequenceMatcher(None, tokens(a), tokens(b), autojunk=False).ratio()


def _definitions(source: str) -> list[ast.AST]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def reference_definitions(withheld: Mapping[str, Sequence[str]]) -> dict[str, ast.AST]:
    """``{"module.name": definition}`` of the withheld references, read from the package's source."""
    from rlcourse.grading.view import _module_path

    out: dict[str, ast.AST] = {}
    for module, names in withheld.items():
        for node in _definitions(_module_path(module).read_text()):
            if getattr(node, "name", None) in names:
                out[f"{module}.{node.name}"] = node  # type: ignore[attr-defined]
    return out


def near_copies(nb: nbformat.NotebookNode, lab: str, threshold: float = NEAR_COPY) -> list[str]:
    """One message per solution definition of ``nb`` that is a near-copy of a withheld reference."""
    from rlcourse.grading.common import withheld

    references = reference_definitions(withheld(lab))
    flags: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        for node in _definitions(cell.source):
            kind = type(node) is ast.ClassDef
            scores: list[tuple[float, Any]] = [(similarity(node, ref), name) for name, ref in references.items()
                                               if (type(ref) is ast.ClassDef) == kind
                                               and len(tokens(ref)) >= MIN_NODES]
            if scores:
                score, name = max(scores)
                if score >= threshold:
                    flags.append(f"{node.name} is a near-copy of {name} (similarity {score:.2f})")  # type: ignore[attr-defined]
    return flags
