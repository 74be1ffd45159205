"""``python -m rlcourse.grading.runner IN OUT``: execute a submission inside the grading sandbox.

Runs the notebook ``IN`` cell by cell in a fresh Python kernel (nbclient) and writes the
executed notebook to ``OUT`` after every cell, so a run stopped by a limit still leaves the
outputs of the cells before. Errors do not stop the run (like nbgrader's ``Execute``); a cell
that runs past ``--cell-timeout`` is interrupted and gets a ``CellTimeoutError`` output; a
kernel that dies (a memory limit, ``os._exit``) ends the run, and the cells after it stay
unexecuted. Nothing here judges anything: the grader outside reads ``OUT`` and the records.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError


def execute(src: Path, dst: Path, cell_timeout: int) -> int:
    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(
        nb, timeout=cell_timeout, allow_errors=True, kernel_name="python3", interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {cell_timeout} s",
                          "traceback": [f"CellTimeoutError: the cell ran longer than {cell_timeout} s"]},
        resources={"metadata": {"path": str(src.parent)}},
    )
    status = 0
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except DeadKernelError as exc:
                cell.outputs.append(nbformat.v4.new_output(
                    "error", ename="DeadKernelError", evalue="the kernel died while running this cell",
                    traceback=[f"DeadKernelError: the kernel died while running this cell ({exc})"]))
                status = 3
                break
            finally:
                _write(nb, dst)
    _write(nb, dst)
    return status


def _write(nb: nbformat.NotebookNode, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--cell-timeout", type=int, default=900)
    args = parser.parse_args(argv)
    return execute(args.src, args.dst, args.cell_timeout)


if __name__ == "__main__":
    sys.exit(main())
