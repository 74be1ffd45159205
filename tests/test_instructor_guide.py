"""The instructor guide (``solutions/INSTRUCTOR_GUIDE.md``) keeps up with the course.

* every "Try it yourself" question of a lecture and every "To think about" question of a lab
  has an entry under a fixed anchor (``L<nn>-try-<k>``, ``<lab>-think-<k>``: the k-th item of
  that list) whose text quotes the question's opening words, and no entry is left for a
  question that is gone;
* every lab has a common-mistakes section (anchor ``<lab>-mistakes``) citing wrong-part cases
  of its tests, and every case the guide cites (``test_checks_<lab>.py::<name>``) exists;
* the guide lives at the top of ``solutions/``, where the release (``make labs``, which copies
  only what nbgrader generates from ``solutions/<lab>/``) never picks it up.

Cheap: it reads the notebooks' markdown and the test files' syntax trees, runs nothing.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import nbformat
import pytest

from rlcourse.grading import release

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "solutions" / "INSTRUCTOR_GUIDE.md"
LECTURES = sorted((REPO / "course").glob("[0-9][0-9]_*.ipynb"))
LABS = release.list_labs(REPO)

# A line that opens a question list: "**Try it yourself**", "## 6. To think about (not graded)".
QUESTION_HEADER = re.compile(r"^\s*(?:#+\s*(?:\d+\.\s*)?)?(?:\*\*)?\s*(try it yourself|to think about)\b", re.I)
ITEM = re.compile(r"^(?:\d+\.|[*-])\s+(.*)")
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
CASE = re.compile(r"`(test_checks_\w+\.py)::([^`]+)`")
EXAMPLE = re.compile(r"autograder/examples/(\w+)")
OPENING_WORDS = 5


def question_lists(markdown: str) -> list[list[str]]:
    """The question lists in one markdown cell: the items after each header line, an item's
    indented continuation lines joined to it."""
    lists, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        if not QUESTION_HEADER.match(lines[i]):
            i += 1
            continue
        items: list[str] = []
        i += 1
        while i < len(lines):
            line = lines[i]
            item = ITEM.match(line)
            if item:
                items.append(item.group(1))
            elif not line.strip():
                pass
            elif line[:1].isspace() and items:
                items[-1] += " " + line.strip()
            else:
                break
            i += 1
        lists.append(items)
    return lists


def notebook_questions(path: Path, key_prefix: str) -> dict[str, str]:
    """``{anchor: question text}`` of one notebook, numbered in order over all its lists."""
    nb = nbformat.read(path, as_version=4)
    items = [q for cell in nb.cells if cell.cell_type == "markdown" for lst in question_lists(cell.source) for q in lst]
    return {f"{key_prefix}-{k}": q for k, q in enumerate(items, 1)}


@lru_cache(maxsize=1)
def all_questions() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in LECTURES:
        out.update(notebook_questions(path, f"L{path.name[:2]}-try"))
    for lab in LABS:
        out.update(notebook_questions(REPO / "solutions" / lab / f"{lab}.ipynb", f"{lab}-think"))
    return out


def normalize(text: str) -> str:
    """Lower case, markdown and quoting marks dropped, whitespace collapsed."""
    text = re.sub(r"[`*$\\\"“”]", "", text).lower()
    return " ".join(text.split())


def opening(question: str) -> str:
    return " ".join(normalize(question).split()[:OPENING_WORDS])


def sections(guide: str) -> dict[str, str]:
    """``{anchor: text from the anchor to the next anchor}``."""
    marks = list(ANCHOR.finditer(guide))
    return {m.group(1): guide[m.end(): nxt.start() if nxt else len(guide)]
            for m, nxt in zip(marks, [*marks[1:], None])}


def missing_answers(guide: str, questions: dict[str, str]) -> list[str]:
    found = sections(guide)
    problems = []
    for key, question in questions.items():
        if key not in found:
            problems.append(f"{key}: no entry for {question[:60]!r}")
        elif opening(question) not in normalize(found[key]):
            problems.append(f"{key}: the entry does not quote the question's opening words {opening(question)!r}")
    return problems


def stale_entries(guide: str, questions: dict[str, str]) -> list[str]:
    entry = re.compile(r"L\d\d-try-\d+$|.+-think-\d+$")
    return [key for key in sections(guide) if entry.match(key) and key not in questions]


@lru_cache(maxsize=None)
def names_in(test_file: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(functions, classes and module-level names; every string literal) of a test module."""
    tree = ast.parse(test_file.read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return frozenset(defined), frozenset(strings)


def unknown_cases(guide: str) -> list[str]:
    """Cited cases that the tests do not have: each part of ``name/"label"`` must be a name
    defined in the test file (function, class, module-level variable) or one of its string
    literals; a quoted part must be a string literal."""
    problems = []
    for file, ref in CASE.findall(guide):
        path = REPO / "tests" / file
        if not path.is_file():
            problems.append(f"{file}::{ref}: no such test file")
            continue
        defined, strings = names_in(path)
        for part in ref.split("/"):
            quoted = part.startswith('"') and part.endswith('"')
            name = part[1:-1] if quoted else part
            if not (name in strings or (not quoted and name in defined)):
                problems.append(f"{file}::{ref}: {part} is not in {file}")
    for student in set(EXAMPLE.findall(guide)):
        if not (REPO / "autograder" / "examples" / student).is_dir():
            problems.append(f"autograder/examples/{student}: no such example student")
    return problems


def cases_per_lab(guide: str) -> dict[str, int]:
    found = sections(guide)
    return {lab: len({ref for file, ref in CASE.findall(found.get(f"{lab}-mistakes", ""))
                      if file == f"test_checks_{lab}.py"}) for lab in LABS}


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


# --------------------------------------------------------------------------- the real guide
def test_every_notebook_has_questions() -> None:
    """The question finder still finds every list (a parser that finds nothing would make the
    checks below pass vacuously)."""
    questions = all_questions()
    for path in LECTURES:
        assert f"L{path.name[:2]}-try-1" in questions, f"no 'Try it yourself' list found in {path.name}"
    for lab in LABS:
        assert f"{lab}-think-1" in questions, f"no 'To think about' list found in {lab}"


def test_every_question_has_an_answer(guide: str) -> None:
    problems = missing_answers(guide, all_questions())
    assert not problems, "solutions/INSTRUCTOR_GUIDE.md:\n" + "\n".join(problems)


def test_no_answer_is_left_for_a_question_that_is_gone(guide: str) -> None:
    stale = stale_entries(guide, all_questions())
    assert not stale, f"entries without a question in the notebooks: {stale}"


def test_every_lab_has_a_common_mistakes_section(guide: str) -> None:
    counts = cases_per_lab(guide)
    assert LABS and all(n >= 3 for n in counts.values()), f"cases cited per lab's mistakes section: {counts}"


def test_every_cited_case_exists(guide: str) -> None:
    assert CASE.search(guide), "the guide cites no test case"
    problems = unknown_cases(guide)
    assert not problems, "\n".join(problems)


def test_the_guide_stays_out_of_the_release() -> None:
    assert GUIDE.is_file() and GUIDE.parent == REPO / "solutions"
    assert GUIDE.stem not in release.list_labs(REPO)   # a folder of solutions/ with a notebook is a lab
    assert not list((REPO / "labs").rglob("INSTRUCTOR_GUIDE*")), "the guide was copied into labs/"


# --------------------------------------------------------------------------- the checks can fail
def test_the_checks_catch_a_missing_entry_a_stale_entry_and_an_unknown_case(guide: str) -> None:
    questions = all_questions()
    key = next(iter(questions))
    assert missing_answers(guide.replace(f'<a id="{key}"></a>', ""), questions)
    reworded = dict(questions, **{key: "Something else entirely " + questions[key]})
    assert missing_answers(guide, reworded)
    assert stale_entries(guide + '\n<a id="L99-try-1"></a>\n', questions) == ["L99-try-1"]
    bad = guide + "\n`test_checks_lab2_ppo.py::gae_that_nobody_wrote` `test_checks_lab3_reward_shaping.py::alive_bonus/\"no such label\"`\n"
    assert len(unknown_cases(bad)) == 2
    assert cases_per_lab(guide.replace(f'<a id="{LABS[0]}-mistakes"></a>', ""))[LABS[0]] == 0


def test_the_question_finder_reads_both_list_styles() -> None:
    lecture = "Text.\n\n**Try it yourself**\n1. First `a`.\n2. Second,\n   continued.\n3. Third."
    lab = "## 7. To think about (not graded)\n\n* One\n  more.\n* Two.\n\nA paragraph after."
    prose = "(see the end of this\nnotebook, and try it yourself in part 4)."
    assert question_lists(lecture) == [["First `a`.", "Second, continued.", "Third."]]
    assert question_lists(lab) == [["One more.", "Two."]]
    assert question_lists(prose) == []
