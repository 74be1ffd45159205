"""The grading view of the package: ``rlcourse/`` with a lab's reference implementations withheld.

``rlcourse`` ships the reference implementations of what the labs ask for (``compute_gae``,
``polyak_update``...). While a submission is graded, the sandbox sees this view mounted over
the package instead of the package itself: a copy in which the body of every function or class
named in the lab's ``WITHHELD`` (``{"rlcourse.algos.ppo": ("compute_gae", ...)}``) is replaced
by a ``raise`` of :class:`rlcourse.grading.hidden.WithheldDuringGrading`. A solution that
imports the reference fails that part, with the reason in its feedback. The copy has no
``__pycache__`` (compiled originals would bring the bodies back) and the sandbox sees no other
copy of the source (no ``.git``, no ``solutions/``).
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

PACKAGE_DIR = Path(__file__).resolve().parents[1]

_RAISE = "raise _Withheld({name!r})"
# Appended to a module with withheld names (looked up when a stub runs, so no import cycle).
_IMPORT = "\nfrom rlcourse.grading.hidden import WithheldDuringGrading as _Withheld  # grading view\n"


def _module_path(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "rlcourse":
        raise ValueError(f"WITHHELD names a module outside rlcourse: {module!r}")
    path = PACKAGE_DIR.joinpath(*parts[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def withhold(source: str, names: Sequence[str], module: str) -> str:
    """``source`` with the bodies of the top-level functions and classes ``names`` replaced by a
    raise (signature, decorators and docstring kept; a class raises when instantiated)."""
    tree = ast.parse(source)
    lines = source.split("\n")
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names:
            found[node.name] = node
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"WITHHELD names {', '.join(missing)} in {module}, which defines no such top-level "
                         "function or class")
    # Replace from the bottom up so earlier line numbers stay valid.
    for name, node in sorted(found.items(), key=lambda kv: -kv[1].lineno):
        body = node.body
        keep = body[:1] if body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str) else []
        first = (keep[0].end_lineno if keep else body[0].lineno - 1)  # last kept line (1-based)
        indent = " " * body[0].col_offset
        qualified = f"{module}.{name}"
        if isinstance(node, ast.ClassDef):
            stub = [f"{indent}def __init__(self, *args, **kwargs):",
                    f"{indent}    {_RAISE.format(name=qualified)}"]
        else:
            stub = [f"{indent}{_RAISE.format(name=qualified)}"]
        lines[first:node.end_lineno] = stub
    return "\n".join(lines) + _IMPORT


def build_view(withheld: Mapping[str, Sequence[str]], dest: Path) -> Path:
    """Write the grading view into ``dest/rlcourse`` and return that folder."""
    target = Path(dest) / "rlcourse"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for module, names in withheld.items():
        path = _module_path(module)
        rel = path.relative_to(PACKAGE_DIR)
        (target / rel).write_text(withhold(path.read_text(), tuple(names), module))
    return target


def view_for(lab: str, cache: Path | None = None) -> Path:
    """The grading view of ``lab`` (its checks module's ``WITHHELD``), built once per content of
    the package in ``cache`` (default: the system's temporary folder)."""
    from rlcourse.grading.common import withheld as lab_withheld

    withheld = lab_withheld(lab)
    h = hashlib.sha256(repr(sorted((k, tuple(v)) for k, v in withheld.items())).encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes())
    root = Path(cache or tempfile.gettempdir()) / f"rlcourse-view-{lab}-{h.hexdigest()[:16]}"
    if not (root / "rlcourse").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        tmp.chmod(0o755)  # the sandbox's own uid reads it
        build_view(withheld, tmp)
        try:
            tmp.rename(root)  # atomic: two graders building at once both end with one complete view
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "rlcourse"
