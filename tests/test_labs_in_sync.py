"""The committed student notebooks and example submissions are what the solutions generate.

``solutions/<lab>/<lab>.ipynb`` is the only source of a lab. ``labs/<lab>/`` is produced from it
by ``nbgrader generate_assignment`` and ``autograder/examples/`` by filling in its answers
(``make labs``). If someone edits a solution notebook and forgets to regenerate, students
would get a stale lab and the pinned metrics could describe another notebook: these tests
fail with the command that fixes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from rlcourse.grading import release

REPO = Path(__file__).resolve().parents[1]
LABS = release.list_labs(REPO)
FIX = "run `make labs` (python -m rlcourse.grading.release) and commit labs/ and autograder/examples/"


def test_there_are_labs() -> None:
    assert "lab2_ppo" in LABS


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_release_is_up_to_date(lab: str, tmp_path: Path) -> None:
    generated = release.generate_release(lab, REPO, tmp_path)
    names = sorted(p.name for p in generated.glob("*.ipynb"))
    committed = sorted(p.name for p in (REPO / "labs" / lab).glob("*.ipynb"))
    assert names == committed, f"labs/{lab} holds {committed}, the solutions generate {names}; {FIX}"
    for name in names:
        fresh = release.notebook_signature(generated / name)
        current = release.notebook_signature(REPO / "labs" / lab / name)
        assert len(fresh) == len(current), f"labs/{lab}/{name}: cell count differs from a fresh generation; {FIX}"
        for i, (a, b) in enumerate(zip(fresh, current)):
            assert a == b, f"labs/{lab}/{name}: cell {i} ({a[2][0]}) differs from a fresh generation; {FIX}"


@pytest.mark.parametrize("lab", LABS)
def test_examples_are_up_to_date(lab: str) -> None:
    for student, notebooks in release.example_submissions(lab, REPO).items():
        for name, nb in notebooks.items():
            path = REPO / release.EXAMPLES_RELPATH / student / lab / name
            assert path.exists(), f"missing example {path.relative_to(REPO)}; {FIX}"
            want = [(c.cell_type, c.source) for c in nb.cells]
            got = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
            assert got == want, f"{path.relative_to(REPO)} is stale; {FIX}"


@pytest.mark.parametrize("lab", LABS)
def test_release_has_no_solutions_or_hidden_tests(lab: str) -> None:
    for path in (REPO / "labs" / lab).glob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "rlcourse.grading"):
            assert marker not in text, f"{path.relative_to(REPO)} contains {marker!r}"
    leaked = [p.name for p in (REPO / "labs" / lab).iterdir() if p.suffix != ".ipynb"]
    assert not leaked, f"labs/{lab} holds files besides notebooks (only the notebook is handed out): {leaked}"


def _last_statement(source: str) -> ast.stmt:
    lines = [ln for ln in source.split("\n") if "HIDDEN TESTS" not in ln]
    return ast.parse("\n".join(lines)).body[-1]


@pytest.mark.parametrize("lab", LABS)
def test_source_notebook_follows_the_grading_rules(lab: str) -> None:
    """Each test cell is locked, has points and ends in an assert or a call (never a bare value:
    nbgrader would read a number as partial credit); each solution cell has its markers."""
    nb = nbformat.read(REPO / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "duplicate grade_id"
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert tests, "no graded cell"
    for cell in tests:
        meta = cell.metadata["nbgrader"]
        assert cell.cell_type == "code" and meta["locked"] and meta["points"] > 0, meta["grade_id"]
        last = _last_statement(cell.source)
        ok = isinstance(last, ast.Assert) or (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call))
        assert ok, f"{meta['grade_id']} must end in an assert or a function call, not {ast.dump(last)[:60]}"
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
