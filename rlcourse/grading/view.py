"""The grading view of the package: ``rlcourse/`` with a lab's reference implementations withheld.

``rlcourse`` ships the reference implementations of what the labs ask for (``compute_gae``,
``polyak_update``...). While a submission is graded, the sandbox sees this view mounted over
the package instead of the package itself: a copy in which the body of every function or class
named in the lab's ``WITHHELD`` (``{"rlcourse.algos.ppo": ("compute_gae", ...)}``) is replaced
by a ``raise`` of :class:`rlcourse.grading.hidden.WithheldDuringGrading`. A solution that
imports the reference fails that part, with the reason in its feedback. A name in the lab's
``GUARDED`` keeps its body behind a guard instead: it raises when called from anywhere but the
package's own code, because the package itself runs it (lab 4's env draws its randomization
with ``sample``); the guard also raises when the student's own function or class of that name
is further up the stack, so a solution cannot delegate to the reference through a package
function that calls it. A solution that binds the name to a package callable
(``sample = env.dr.sample``) is not caught by the guard; the near-copy flag and the checks
outside the sandbox remain. The copy has no
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
_GUARD = "if not _called_from_package({short!r}): raise _Withheld({name!r})"
# Appended to a module with withheld names (looked up when a stub runs, so no import cycle).
_IMPORT = ("\nfrom rlcourse.grading.hidden import WithheldDuringGrading as _Withheld  # grading view\n"
           "from rlcourse.grading.hidden import called_from_package as _called_from_package  # grading view\n")


def _module_path(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "rlcourse":
        raise ValueError(f"WITHHELD names a module outside rlcourse: {module!r}")
    path = PACKAGE_DIR.joinpath(*parts[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _docstring_end(body: list[ast.stmt]) -> int | None:
    """The last line (1-based) of ``body``'s docstring, or None without one."""
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno
    return None


def withhold(source: str, names: Sequence[str], module: str, guarded: Sequence[str] = ()) -> str:
    """``source`` with the bodies of the top-level functions and classes ``names`` replaced by a
    raise (signature, decorators and docstring kept; a class raises when instantiated).

    The names also in ``guarded`` keep their bodies: each function, and each method of a class,
    starts with a guard that raises unless the caller is the package's own code.
    """
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
    # (first line to replace, last line to replace, new lines), applied from the bottom up so
    # earlier line numbers stay valid.
    edits: list[tuple[int, int, list[str]]] = []
    for name, node in found.items():
        qualified = f"{module}.{name}"
        if name in guarded:
            functions = ([node] if not isinstance(node, ast.ClassDef) else
                         [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))])
            for fn in functions:
                after = _docstring_end(fn.body) or fn.body[0].lineno - 1
                indent = " " * fn.body[0].col_offset
                edits.append((after, after, [indent + _GUARD.format(short=name, name=qualified)]))
            continue
        body = node.body
        first = _docstring_end(body) or body[0].lineno - 1  # last kept line (1-based)
        indent = " " * body[0].col_offset
        if isinstance(node, ast.ClassDef):
            stub = [f"{indent}def __init__(self, *args, **kwargs):",
                    f"{indent}    {_RAISE.format(name=qualified)}"]
        else:
            stub = [f"{indent}{_RAISE.format(name=qualified)}"]
        edits.append((first, node.end_lineno, stub))
    for start, end, new in sorted(edits, key=lambda e: -e[0]):
        lines[start:end] = new
    return "\n".join(lines) + _IMPORT


def build_view(withheld: Mapping[str, Sequence[str]], dest: Path,
               guarded: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write the grading view into ``dest/rlcourse`` and return that folder (``guarded``: the
    names of ``withheld`` that keep their bodies behind a guard)."""
    target = Path(dest) / "rlcourse"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for module, names in withheld.items():
        path = _module_path(module)
        rel = path.relative_to(PACKAGE_DIR)
        (target / rel).write_text(withhold(path.read_text(), tuple(names), module,
                                           tuple((guarded or {}).get(module, ()))))
    return target


def view_for(lab: str, cache: Path | None = None) -> Path:
    """The grading view of ``lab`` (its checks module's ``WITHHELD`` and ``GUARDED``), built once
    per content of the package in ``cache`` (default: the system's temporary folder)."""
    from rlcourse.grading.common import guarded as lab_guarded
    from rlcourse.grading.common import withheld as lab_withheld

    withheld, guarded = lab_withheld(lab), lab_guarded(lab)
    h = hashlib.sha256(repr([sorted(withheld.items()), sorted(guarded.items())]).encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes())
    root = Path(cache or tempfile.gettempdir()) / f"rlcourse-view-{lab}-{h.hexdigest()[:16]}"
    if not (root / "rlcourse").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        tmp.chmod(0o755)  # the sandbox's own uid reads it
        build_view(withheld, tmp, guarded)
        try:
            tmp.rename(root)  # atomic: two graders building at once both end with one complete view
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "rlcourse"
