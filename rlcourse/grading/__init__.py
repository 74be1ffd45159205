"""Instructor tooling for the nbgrader labs.

A lab is its source notebook ``solutions/<lab>/<lab>.ipynb`` plus its checks module
``rlcourse.grading.<lab>`` (the hidden checks the notebook's test cells call).

* :mod:`rlcourse.grading.common`: what every lab's checks share (pins, tolerances, the graded
  run's protocol, the evaluated-return check).
* :mod:`rlcourse.grading.release`: ``labs/`` and the example submissions from ``solutions/``.
* :mod:`rlcourse.grading.pins`: ``rlcourse pin``, the source notebook run on several seeds.
* :mod:`rlcourse.grading.pipeline`: generate, autograde, feedback and export (``rlcourse grade``).
* :mod:`rlcourse.grading.feedback` and :mod:`rlcourse.grading.sanitize`: what students see.
* :mod:`rlcourse.grading.sandbox`: run a command (a submission) in a bubblewrap sandbox: no
  network, read-only environment, solutions and pins hidden, resource limits.

The course configuration is ``autograder/nbgrader_config.py``; every nbgrader step runs
through nbgrader's own command line with that file.
"""

from __future__ import annotations

import sys

# This module is imported by every grading process before anything else of the package (the
# nbgrader processes, the sandbox's runner, ``rlcourse grade``): it imports nothing heavy.


UNUSED_FORMAT_CHECKERS = ("rfc3987_syntax",)
"""Optional packages jsonschema imports for its format checkers, and no grading process uses."""


def skip_unused_format_checkers() -> None:
    """Keep jsonschema from importing the packages of :data:`UNUSED_FORMAT_CHECKERS`.

    nbformat loads jsonschema, which imports each of them when it is installed (jupyter-events
    pulls them in through ``jsonschema[format-nongpl]``). ``rfc3987_syntax`` (the "iri" format)
    compiles an Earley grammar on import: about 2 s in every process that reads a notebook, and
    grading one submission starts several. Formats are only checked by a validator given a format
    checker; nbformat's validator has none, and nothing else in these processes validates JSON. A
    ``None`` entry in ``sys.modules`` makes the import raise ImportError, which jsonschema expects
    from an optional checker that is not installed. Call it before nbformat is imported.
    """
    for name in UNUSED_FORMAT_CHECKERS:
        sys.modules.setdefault(name, None)


def nbgrader_alembic_head() -> str:
    """The gradebook schema's alembic revision, as ``nbgrader.api.get_alembic_version()`` gives it
    (the first token of the first line of ``alembic heads`` on nbgrader's migration scripts),
    read in this process from alembic's API instead of by running the ``alembic`` executable.
    nbgrader writes it into every gradebook it creates."""
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    script = ScriptDirectory(ALEMBIC_DIR)
    heads = script.get_revisions(script.get_heads())
    return heads[0].revision if heads else ""


def use_in_process_alembic() -> None:
    """Make nbgrader find the alembic revision of a new gradebook with
    :func:`nbgrader_alembic_head` (~0.15 s) instead of a subprocess (~2.6 s: a new Python that
    imports alembic and SQLAlchemy), once per gradebook created."""
    import nbgrader.api

    nbgrader.api.get_alembic_version = nbgrader_alembic_head


def nbgrader_main() -> None:
    """``python -m nbgrader``, started faster (see :data:`rlcourse.grading.release.NBGRADER_MAIN`)."""
    skip_unused_format_checkers()
    use_in_process_alembic()
    from nbgrader.apps.nbgraderapp import main

    main()
