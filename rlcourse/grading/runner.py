"""``python -m rlcourse.grading.runner IN OUT``: execute a submission inside the grading sandbox.

Runs the notebook ``IN`` cell by cell in a fresh Python kernel (nbclient) and writes the
executed notebook to ``OUT`` after every cell, so a run stopped by a limit still leaves the
outputs of the cells before. Errors do not stop the run (like nbgrader's ``Execute``); a cell
that runs past ``--cell-timeout`` is interrupted and gets a ``CellTimeoutError`` output; a
kernel that dies (a memory limit, ``os._exit``) ends the run, and the cells after it stay
unexecuted. The outputs the notebook keeps are capped (``--max-output-bytes``): past the cap the
cell is interrupted, its further output dropped, an ``OutputLimitError`` output added and the run
ends; ``OUT``'s metadata says ``{"rlcourse_runner": {"stopped": "output"}}``. (The sandbox's own
output cap sees only this process's stdout; cell output reaches it over the kernel's channels.)
Nothing here judges anything: the grader outside reads ``OUT`` and the records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

from rlcourse.grading import skip_unused_format_checkers

skip_unused_format_checkers()  # before nbformat: seconds of start-up (see there)

import nbformat  # noqa: E402 (after the line above)
from jupyter_client.asynchronous import AsyncKernelClient  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbclient.util import ensure_async  # noqa: E402

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
"""Output a notebook may keep (JSON of its messages): a lab's plots, logs and a short video fit."""
OUTPUT_MESSAGES = {"stream", "display_data", "execute_result", "update_display_data"}
STOPPED_BY_OUTPUT = 4


class ReadyClient(AsyncKernelClient):
    """jupyter_client's kernel client, ready 0.2 s sooner.

    Its ``wait_for_ready`` (the kernel_info handshake, kept here as it is) ends by draining IOPub
    until 0.2 s pass without a message: the status messages of its own kernel_info requests.
    nbclient reads only the messages whose parent is the cell's execute request, so whatever is
    left queued is skipped there all the same.
    """

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.time() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                msg = await ensure_async(self.shell_channel.get_msg(timeout=1))
            except Empty:
                pass
            else:
                if msg["msg_type"] == "kernel_info_reply":
                    try:  # IOPub is connected once a message comes through it
                        await ensure_async(self.iopub_channel.get_msg(timeout=0.2))
                    except Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(msg)
                        return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.time() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    wait_for_ready = _async_wait_for_ready


class CappedClient(NotebookClient):
    """An nbclient client that keeps at most ``max_output_bytes`` of output for the notebook."""

    def __init__(self, nb: nbformat.NotebookNode, max_output_bytes: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.max_output_bytes = max_output_bytes
        self.output_bytes = 0
        self.over_cap = False

    def process_message(self, msg: dict[str, Any], cell: nbformat.NotebookNode,
                        cell_index: int) -> nbformat.NotebookNode | None:
        if msg.get("msg_type") in OUTPUT_MESSAGES:
            self.output_bytes += len(json.dumps(msg.get("content", {})))
            if self.output_bytes > self.max_output_bytes:
                if not self.over_cap:
                    self.over_cap = True
                    self._kill_kernel()
                return None  # dropped: what is still queued from the kernel is read and discarded
        return super().process_message(msg, cell, cell_index)

    def create_kernel_manager(self) -> Any:
        km = super().create_kernel_manager()
        km.client_factory = ReadyClient
        return km

    def end_kernel(self) -> None:
        """SIGKILL the kernel's process group and reap the kernel. nbclient's immediate shutdown
        does the same, then polls the kernel every 0.1 s until it is gone."""
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is None:
            return
        pgid = getattr(provisioner, "pgid", None)
        try:
            if pgid and pgid != os.getpgrp():  # jupyter_client starts the kernel in a session of its own
                os.killpg(pgid, signal.SIGKILL)
            else:
                process.kill()
        except OSError:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # nbclient's shutdown at the end of setup_kernel() tries again

    def _kill_kernel(self) -> None:
        """End the kernel at once: an interrupt would leave gigabytes of queued output to read
        first, and a cell can ignore it. The run ends here anyway (DeadKernelError)."""
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            process.kill()
        else:
            asyncio.ensure_future(ensure_async(self.km.shutdown_kernel(now=True)))


def execute(src: Path, dst: Path, cell_timeout: int, max_output_bytes: int = MAX_OUTPUT_BYTES) -> int:
    nb = nbformat.read(src, as_version=4)
    # The kernel is killed at the end instead of asked to shut down (~0.8 s less per run): every
    # cell's outputs are in by the time its execution returns (nbclient waits for the kernel's
    # idle status), ``nb`` is written after each cell, and the records are written by the cells
    # themselves. What a graceful shutdown adds, the kernel's atexit handlers, the grader never reads.
    client = CappedClient(
        nb, max_output_bytes, timeout=cell_timeout, allow_errors=True, kernel_name="python3", interrupt_on_timeout=True,
        shutdown_kernel="immediate",
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
                if client.over_cap:
                    break  # the finally below says why
                cell.outputs.append(nbformat.v4.new_output(
                    "error", ename="DeadKernelError", evalue="the kernel died while running this cell",
                    traceback=[f"DeadKernelError: the kernel died while running this cell ({exc})"]))
                status = 3
                break
            finally:
                if client.over_cap:
                    message = (f"the notebook printed more than {max_output_bytes // 2**20} MB of output; "
                               "the rest was dropped and the notebook stopped here")
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename="OutputLimitError", evalue=message, traceback=[f"OutputLimitError: {message}"]))
                    nb.metadata["rlcourse_runner"] = {"stopped": "output"}
                    status = STOPPED_BY_OUTPUT
                _write(nb, dst)
            if client.over_cap:
                break
        client.end_kernel()
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
    parser.add_argument("--max-output-bytes", type=int, default=MAX_OUTPUT_BYTES)
    args = parser.parse_args(argv)
    return execute(args.src, args.dst, args.cell_timeout, args.max_output_bytes)


if __name__ == "__main__":
    sys.exit(main())
