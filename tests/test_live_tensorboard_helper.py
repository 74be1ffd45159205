"""``rlcourse.teaching.live_tensorboard`` without a browser: where it points, and that it never leaks.

(tests/test_browser_tensorboard.py watches the embedded chart grow in JupyterLab.)

* Under JupyterHub the iframe URL goes through jupyter-server-proxy under the hub's prefix; with
  no Jupyter server around there is nothing to embed into.
* Executed by nbclient (as ``make book`` runs lecture 8), the cell returns at once, shows the
  local URL instead of an iframe, the server answers and lists a run written after it started,
  and no TensorBoard process is left once the kernel is gone.
* A kernel killed with SIGKILL (no atexit) takes its TensorBoard and TensorBoard's data server
  with it: they exit when their stdin pipe closes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser_helpers import processes_mentioning
from rlcourse.teaching import live_tensorboard as ltb

# Each real server costs a few seconds of TensorBoard import; the first two tests need none.
GONE_WITHIN_S = 30


def _wait_gone(marker: str) -> list[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def test_embed_url_under_jupyterhub_goes_through_the_proxy(monkeypatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ann/")
    assert ltb.embed_url(6006) == "/user/ann/proxy/6006/"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/hub-prefix/user/bob")   # no trailing slash
    assert ltb.embed_url(41234) == "/hub-prefix/user/bob/proxy/41234/"


def test_no_jupyter_server_means_nothing_to_embed(monkeypatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert ltb._parent_jupyter_server() is None   # pytest's parent is no Jupyter server
    assert ltb.embed_url(6006) is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_without_a_server_shows_a_link_and_leaks_nothing(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    logdir = (tmp_path / "runs").resolve()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from rlcourse.teaching.live_tensorboard import live_tensorboard\n"
        f"tb = live_tensorboard({str(logdir)!r})\n"
        f"assert live_tensorboard({str(logdir)!r}, display=False) is tb   # one server per logdir\n"
        "print('URL', tb.local_url)")]
    env = dict(os.environ)
    env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
    started = time.monotonic()
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # Keep the kernel up after the cell, to query its server; the context exit shuts it down.
    with client.setup_kernel(env=env):
        client.execute_cell(nb.cells[0], 0)
        outputs = nb.cells[0].outputs
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        text = "".join(o.get("text", "") for o in outputs)
        assert 'class="rlcourse-tensorboard"' in html and "<iframe" not in html, html
        url = text.split("URL ", 1)[1].split()[0]
        assert url in html
        # A run written after the server started shows up (it serves the parent folder).
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(logdir / "demo")) as writer:
            writer.add_scalar("charts/episode_return", 1.0, 0)
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url + "data/runs", timeout=10) as r:
                runs = json.loads(r.read())
            if runs == ["demo"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert runs == ["demo"]
        assert processes_mentioning(str(logdir)), "no TensorBoard process serves the logdir"
    assert not _wait_gone(str(logdir)), "TensorBoard outlived the kernel"
    print(f"nbclient round trip: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_kernel_takes_its_tensorboard_along(tmp_path: Path) -> None:
    logdir = (tmp_path / "runs").resolve()
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom rlcourse.teaching.live_tensorboard import live_tensorboard\n"
         "print('URL', live_tensorboard(sys.argv[1]).local_url, flush=True)\nsys.stdin.read()\n", str(logdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = child.stdout.readline()   # the helper returns once the server listens
        url = line.split()[-1]
        with urllib.request.urlopen(url + "data/environment", timeout=10) as r:
            assert json.loads(r.read())["data_location"] == str(logdir)
        serving = [pid for pid in processes_mentioning(str(logdir)) if pid != child.pid]
        assert len(serving) >= 2, f"expected TensorBoard and its data server, found {serving}"
        os.kill(child.pid, signal.SIGKILL)   # like a kernel killed by the OOM killer: no atexit
        child.wait(timeout=30)
        assert not _wait_gone(str(logdir)), "TensorBoard survived its killed parent"
    finally:
        for pid in processes_mentioning(str(logdir)):
            os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
