"""Regenerate the student notebooks (``labs/``) and the example submissions from ``solutions/``.

    python -m rlcourse.grading.release            # every lab (what `make labs` runs)
    python -m rlcourse.grading.release lab2_ppo

The student version is made by nbgrader itself (``nbgrader generate_assignment``: solutions
replaced by stubs, hidden tests removed, checksums added), run through its command line
against a throw-away gradebook and release folder, so regenerating never touches the
instructor's ``autograder/gradebook.db``. The result is copied to ``labs/<lab>/``.

The same command writes three synthetic submissions per lab into
``autograder/examples/<student>/<lab>/`` so that ``make grade`` has something to grade on a
fresh clone:

* ``example_complete``: the release with every solution cell answered (the reference code);
* ``example_partial``: only the first solution cell answered (lab 2: time-out bootstrapping right,
  GAE and surrogate missing);
* ``example_empty``: the release as handed out.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

CONFIG_RELPATH = Path("autograder") / "nbgrader_config.py"
EXAMPLES_RELPATH = Path("autograder") / "examples"
SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"


# --------------------------------------------------------------------------- course layout
def find_course_dir(course_dir: str | os.PathLike | None = None) -> Path:
    """The course root: ``course_dir``, else the first folder above the working directory that
    holds ``autograder/nbgrader_config.py``, else the repository this package lives in."""
    if course_dir is not None:
        root = Path(course_dir).resolve()
        if not (root / CONFIG_RELPATH).is_file():
            raise FileNotFoundError(f"{root} is not a course folder (no {CONFIG_RELPATH})")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_RELPATH).is_file():
            return folder
    repo = Path(__file__).resolve().parents[2]
    if (repo / CONFIG_RELPATH).is_file():
        return repo
    raise FileNotFoundError(f"no course found: no {CONFIG_RELPATH} above {here}; pass --course-dir")


def list_labs(course_dir: Path) -> list[str]:
    """Labs are the folders of ``solutions/`` that hold a notebook."""
    src = course_dir / "solutions"
    return sorted(p.name for p in src.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))) if src.is_dir() else []


def resolve_labs(course_dir: Path, lab: str | None) -> list[str]:
    labs = list_labs(course_dir)
    if lab is None:
        if not labs:
            raise FileNotFoundError(f"no labs in {course_dir / 'solutions'}")
        return labs
    if lab not in labs:
        raise ValueError(f"unknown lab {lab!r}; labs in {course_dir / 'solutions'}: {', '.join(labs) or 'none'}")
    return [lab]


# What `python -m nbgrader` runs, minus seconds of start-up: jsonschema's unused optional format
# checkers are not imported (~2 s per nbgrader process, two per graded submission), and a new
# gradebook gets its alembic revision in-process instead of from an `alembic` subprocess (~2.6 s
# per gradebook created). See rlcourse.grading.nbgrader_main.
NBGRADER_MAIN = "from rlcourse.grading import nbgrader_main; nbgrader_main()"


def nbgrader_command(course_dir: Path, *args: str) -> list[str]:
    """``python -m nbgrader ARGS`` with the course's config file (the real CLI; see
    :data:`NBGRADER_MAIN` for how it is started).

    nbgrader's sub-commands have no ``--config`` alias; the trait behind it is
    ``JupyterApp.config_file``, given without ``.py`` (nbgrader appends it when it checks
    that the file exists).
    """
    config = (course_dir / CONFIG_RELPATH).with_suffix("")
    return [sys.executable, "-c", NBGRADER_MAIN, *args, f"--JupyterApp.config_file={config}"]


def nbgrader_env() -> dict[str, str]:
    """The environment for nbgrader processes: this interpreter's ``bin/`` first on ``PATH``
    (`make` does not activate the virtualenv, and nbgrader's own ``alembic`` calls, such as
    ``nbgrader db upgrade``, run the executable)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_nbgrader(course_dir: Path, *args: str, timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run one nbgrader command; raise ``RuntimeError`` with its log if it fails."""
    proc = subprocess.run(nbgrader_command(course_dir, *args), cwd=course_dir, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=nbgrader_env())
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr).strip()
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed (exit {proc.returncode}):\n{log}")
    return proc


# --------------------------------------------------------------------------- release
def generate_release(lab: str, course_dir: Path, out_dir: Path) -> Path:
    """Run ``nbgrader generate_assignment`` for ``lab`` into ``out_dir/<lab>/``; returns that folder.

    A temporary gradebook keeps the instructor's ``autograder/gradebook.db`` out of it.
    """
    out_dir = Path(out_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="rlcourse_release_db_") as tmp:
        run_nbgrader(
            course_dir, "generate_assignment", lab, "--force",
            f"--CourseDirectory.release_directory={out_dir}",
            f"--CourseDirectory.db_url=sqlite:///{Path(tmp) / 'gradebook.db'}",
        )
    folder = out_dir / lab
    if not any(folder.glob("*.ipynb")):
        raise RuntimeError(f"nbgrader generated no notebook for {lab} in {folder}")
    return folder


def notebook_signature(path: str | os.PathLike) -> list[tuple[Any, ...]]:
    """What makes two versions of a notebook the same lab: per cell its type, source and nbgrader
    role. Volatile parts (outputs, execution counts, kernel versions, cell ids) are ignored."""
    nb = nbformat.read(path, as_version=4)
    out = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        role = tuple(meta.get(k) for k in ("grade_id", "grade", "solution", "locked", "points"))
        out.append((cell.cell_type, cell.source, role))
    return out


def write_release(lab: str, course_dir: Path) -> list[Path]:
    """Regenerate ``labs/<lab>/`` (notebooks and files nbgrader copies) from ``solutions/<lab>/``."""
    target = course_dir / "labs" / lab
    with tempfile.TemporaryDirectory(prefix="rlcourse_release_") as tmp:
        generated = generate_release(lab, course_dir, Path(tmp))
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target)
    return sorted(target.glob("*.ipynb"))


# --------------------------------------------------------------------------- examples
def _answer(solution_source: str) -> str:
    """A solution cell as a student would hand it in: the reference code, without the markers."""
    return "\n".join(line for line in solution_source.split("\n")
                     if SOLUTION_BEGIN not in line and SOLUTION_END not in line)


def fill_solutions(release_nb: nbformat.NotebookNode, source_nb: nbformat.NotebookNode,
                   grade_ids: set[str] | None = None) -> nbformat.NotebookNode:
    """Copy of ``release_nb`` whose solution cells (all, or those in ``grade_ids``) hold the reference answer."""
    answers = {c.metadata["nbgrader"]["grade_id"]: _answer(c.source)
               for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if meta.get("solution") and gid in answers and (grade_ids is None or gid in grade_ids):
            cell.source = answers[gid]
    return nb


def example_submissions(lab: str, course_dir: Path) -> dict[str, dict[str, nbformat.NotebookNode]]:
    """``{student: {notebook file name: notebook}}`` for the three synthetic students of ``lab``."""
    out: dict[str, dict[str, nbformat.NotebookNode]] = {"example_complete": {}, "example_partial": {}, "example_empty": {}}
    for release_path in sorted((course_dir / "labs" / lab).glob("*.ipynb")):
        release = nbformat.read(release_path, as_version=4)
        source = nbformat.read(course_dir / "solutions" / lab / release_path.name, as_version=4)
        solution_ids = [c.metadata["nbgrader"]["grade_id"] for c in release.cells
                        if c.metadata.get("nbgrader", {}).get("solution")]
        out["example_complete"][release_path.name] = fill_solutions(release, source)
        out["example_partial"][release_path.name] = fill_solutions(release, source, set(solution_ids[:1]))
        out["example_empty"][release_path.name] = copy.deepcopy(release)
    return out


def write_examples(lab: str, course_dir: Path) -> list[Path]:
    """Write ``autograder/examples/<student>/<lab>/<notebook>.ipynb`` from the current ``labs/<lab>/``."""
    written = []
    for student, notebooks in example_submissions(lab, course_dir).items():
        folder = course_dir / EXAMPLES_RELPATH / student / lab
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, nb in notebooks.items():
            nbformat.write(nb, folder / name)
            written.append(folder / name)
    return written


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlcourse.grading.release", description=__doc__.split("\n")[0])
    parser.add_argument("lab", nargs="?", default=None, help="one lab (default: every lab in solutions/)")
    parser.add_argument("--course-dir", default=None, help="course root (default: the repository)")
    args = parser.parse_args(argv)
    try:
        course_dir = find_course_dir(args.course_dir)
        for lab in resolve_labs(course_dir, args.lab):
            for path in write_release(lab, course_dir) + write_examples(lab, course_dir):
                print(f"wrote {path.relative_to(course_dir)}")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
