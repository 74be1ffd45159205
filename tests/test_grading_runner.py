"""The sandbox's notebook runner (rlcourse.grading.runner), run here without the sandbox.

The runner writes the executed notebook after every cell and kills the kernel at the end
instead of asking it to shut down: these tests check that the last cell's outputs are all in
the notebook it wrote, and that the end of the run does not wait for the kernel's shutdown.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat


def run_runner(tmp_path: Path, sources: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, tmp_path / "in.ipynb")
    proc = subprocess.run([sys.executable, "-m", "rlcourse.grading.runner", "in.ipynb", "out.ipynb"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return nbformat.read(tmp_path / "out.ipynb", as_version=4)


def test_last_cell_outputs_are_kept_and_the_kernel_is_not_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "kernel_shut_down_gracefully"
    out = run_runner(tmp_path, [
        # Runs only if the kernel exits by itself (a graceful shutdown); a kill skips it.
        f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')",
        "print('first')",
        # The last cell: a partial line on stdout, stderr, a display and a result.
        "import sys\nfrom IPython.display import display\n"
        "sys.stdout.write('no newline')\nsys.stderr.write('err')\ndisplay({'a': 1}, raw=False)\n6 * 7",
    ])
    assert [c.execution_count for c in out.cells] == [1, 2, 3]
    assert out.cells[1].outputs[0].text == "first\n"
    last = out.cells[2].outputs
    streams = {o.name: o.text for o in last if o.output_type == "stream"}
    assert streams == {"stdout": "no newline", "stderr": "err"}
    assert any(o.output_type == "display_data" for o in last)
    results = [o for o in last if o.output_type == "execute_result"]
    assert [r.data["text/plain"] for r in results] == ["42"]
    assert not marker.exists(), "the kernel was shut down gracefully (~0.8 s per submission) instead of killed"

