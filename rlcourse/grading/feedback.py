"""Feedback that does not give the hidden tests away.

nbgrader renders the *autograded* notebook as the student's feedback, and that notebook
holds the hidden tests again (they are restored for grading). Its feedback HTML therefore
shows their code (jupyter/nbgrader#1363), and a failing hidden assert shows it a second
time in the traceback, whose context lines quote the cell. :class:`RedactHiddenTests`
runs inside ``nbgrader generate_feedback`` (see ``autograder/nbgrader_config.py``):

* the ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` region is removed from the
  cell source, exactly as ``generate_assignment`` does for the student version;
* in a cell that had such a region, an error keeps only ``ExceptionName: message``.
  The hidden checks in the labs' checks modules write messages that say *what* is
  wrong, never the expected numbers.
"""

from __future__ import annotations


from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests


class RedactHiddenTests(ClearHiddenTests):
    """nbconvert preprocessor: strip hidden tests and their tracebacks from a notebook."""

    def _remove_hidden_test_region(self, cell: NotebookNode) -> bool:
        removed = super()._remove_hidden_test_region(cell)
        if removed and cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    # The traceback quotes the lines around the failing one, hidden ones included.
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return removed


def contains_hidden_tests(text: str, begin: str = "BEGIN HIDDEN TESTS") -> bool:
    """``True`` if rendered feedback still contains a hidden-test delimiter (a last-line check)."""
    return begin in text
