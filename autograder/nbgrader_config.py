"""nbgrader configuration of the course: the repository root *is* the nbgrader course.

    solutions/<lab>/<lab>.ipynb      nbgrader "source"   (instructor notebooks, with solutions and hidden tests)
    labs/<lab>/<lab>.ipynb           nbgrader "release"  (student notebooks, generated, committed)
    autograder/submitted/ ...        submitted copies, autograded notebooks, HTML feedback, gradebook.db
                                     (nbgrader's working state; git-ignored)

Every tool passes this file explicitly, so the repository root stays free of config::

    nbgrader autograde lab2_ppo --JupyterApp.config_file=autograder/nbgrader_config

``rlcourse grade`` / ``make grade`` and ``python -m rlcourse.grading.release`` do that for you.
The course root is derived from this file's location, so a copy of the course elsewhere
(a temporary directory in the tests, a grading server) works unchanged.
"""

import os

c = get_config()  # noqa: F821 (injected by traitlets)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- where things live -------------------------------------------------------------------
c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "rlcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.submitted_directory = os.path.join("autograder", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("autograder", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("autograder", "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "autograder", "gradebook.db")
# Files next to a source notebook are copied into the release and into every autograded
# folder; notebook generators (they contain the solutions) and training output must not be.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "runs"]

# -- executing submissions ---------------------------------------------------------------
# Submissions run in a bubblewrap sandbox and their graded cells are judged outside it
# (rlcourse/grading/execute.py replaces nbgrader's Execute step). Per-cell limit (nbgrader's
# default is 30 s): the PPO training cell of lab 2 takes one to two minutes on a quiet 2-core
# machine, many more on a machine shared with other jobs. The whole-submission wall clock is
# `rlcourse grade --timeout` (default 900 s).
c.SandboxedExecute.timeout = 900
# nbgrader scores a test cell 0 if it wrote *anything* to stderr. Warnings and progress
# bars are not failures; drop them before grading (both options are needed).
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(Warning|warnings\.warn|it/s|s/it|\d+%\|)"
# A student who deletes a test cell gets it back (and graded) instead of "needs manual grading".
c.OverwriteCells.add_missing_cells = True
# nbgrader's default autograde steps, with one added before the scores are saved: a test cell's
# result values are dropped, so a submission cannot print a number (sys.displayhook(4.0)) that
# nbgrader would read as partial credit for a failing test (rlcourse.grading.sanitize).
c.Autograde.autograde_preprocessors = [
    "rlcourse.grading.execute.SandboxedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "rlcourse.grading.sanitize.DropTestCellResults",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# -- feedback ----------------------------------------------------------------------------
# nbgrader's feedback HTML shows hidden tests verbatim (jupyter/nbgrader#1363). Strip the
# hidden region and shorten the tracebacks of those cells before rendering.
# (Import paths, not classes: this file is also read by processes that do not import rlcourse.)
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "rlcourse.grading.feedback.RedactHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
