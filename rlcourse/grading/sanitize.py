"""Autograding steps that keep a submission from scoring points its tests did not give.

nbgrader scores a test cell by its outputs (``nbgrader.utils.determine_grade``): an error or
anything on stderr gives 0, and otherwise the *first* ``execute_result`` that reads as a
number is taken as partial credit, even if an error follows it. A submission can print such
a result from inside a tested function (``sys.displayhook(4.0)``) and keep the points of a
failing test. No test cell of this course ends in a bare value (a test checks it), so
:class:`DropTestCellResults` removes every ``execute_result`` from test cells before
nbgrader scores them: a test cell passes exactly when it raises nothing and writes nothing
to stderr. It runs inside ``nbgrader autograde`` (see ``autograder/nbgrader_config.py``).
"""

from __future__ import annotations

from typing import Any

from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode
from nbgrader.utils import is_grade, is_solution
from traitlets import Bool


class DropTestCellResults(Preprocessor):
    """nbconvert preprocessor: remove ``execute_result`` outputs from nbgrader test cells."""

    enabled = Bool(True, help="nbconvert runs a preprocessor only when it is enabled").tag(config=True)

    def preprocess_cell(self, cell: NotebookNode, resources: dict[str, Any], index: int) -> tuple[NotebookNode, dict]:
        if cell.cell_type == "code" and is_grade(cell) and not is_solution(cell):
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "execute_result"]
        return cell, resources
