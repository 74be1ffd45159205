"""Live TensorBoard inside a notebook: started before training, its charts grow while the run writes.

:func:`live_tensorboard` starts a TensorBoard server on a log directory (give it the *parent* of
the run folders: runs written later, also by ``rlcourse train`` in a terminal, show up in it) and
displays it inline, in an iframe, before the training cell blocks the kernel.

Where the browser can reach the server:

* **JupyterHub** (``JUPYTERHUB_SERVICE_PREFIX`` is set in the kernel) or a **local Jupyter server**
  with `jupyter-server-proxy <https://jupyter-server-proxy.readthedocs.io>`_: through the proxy,
  ``<base_url>proxy/<port>/``, on the notebook's own origin and behind its login. The proxy strips
  that prefix before forwarding, and TensorBoard's page loads everything by relative URLs, so
  TensorBoard needs no ``--path_prefix``; the trailing slash is required.
* A local Jupyter server **without** the proxy: ``http://127.0.0.1:<port>/`` (a browser on the
  same machine only).
* **No Jupyter server** (a notebook executed by nbclient, e.g. ``make book``): nothing to embed
  into; a line with the local URL is shown instead. Nothing waits on a browser.

The server runs in a child process, so training in the kernel never stalls it. The child exits
when its stdin pipe from the kernel closes: on :meth:`LiveTensorBoard.stop`, at the kernel's
exit, and also when the kernel is killed. TensorBoard's own data-server child exits with it.
"""

from __future__ import annotations

import atexit
import html
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

# Run in the child: serve with TensorBoard's own threads, print the URL once listening, exit as
# soon as stdin reaches EOF (the parent closed the pipe or died). os._exit: no waiting for
# TensorBoard's non-daemon threads.
_CHILD = """
import os, sys
from tensorboard import program
tb = program.TensorBoard()
tb.configure(argv=[None, "--logdir", sys.argv[1], "--host", "127.0.0.1", "--port", sys.argv[2],
                   "--reload_interval", sys.argv[3]])
print("URL", tb.launch(), flush=True)
sys.stdin.buffer.read()
os._exit(0)
"""

# Run in the notebook page, next to the iframe. TensorBoard's app re-reads its data on its own
# only with "auto-reload" on, which is off by default and 30 s at the shortest; its settings live
# in the localStorage of its origin, which through the proxy is the notebook's own, so this turns
# it on and, more often than that, presses the app's reload button (same origin: the page may
# reach into the iframe; elsewhere that is refused and the 30 s auto-reload is what remains).
# Opened on a logdir with no runs yet the app shows "No dashboards are active" for a long while,
# so the iframe is loaded once TensorBoard lists a run (or at once where it cannot ask).
_EMBED_JS = """
(() => {
  const frame = document.getElementById(FRAME_ID);
  const src = frame.dataset.src;
  try {
    const key = "_tb_global_settings";
    const settings = JSON.parse(localStorage.getItem(key) || "{}");
    settings.autoReload = true;
    settings.autoReloadPeriodInMs = Math.max(settings.autoReloadPeriodInMs || 0, 30001);
    localStorage.setItem(key, JSON.stringify(settings));
  } catch (e) {}
  const timer = setInterval(() => {
    if (!frame.isConnected) return clearInterval(timer);   // the output was cleared
    try {
      const button = frame.contentDocument.querySelector("app-header-reload button.reload-button");
      if (button && !button.disabled && !button.classList.contains("loading")) button.click();
    } catch (e) {}
  }, RELOAD_MS);
  const since = Date.now();
  const load = () => { if (!frame.src) frame.src = src; };
  const poll = () => fetch(src + "data/runs", {credentials: "same-origin"})
    .then((r) => r.json())
    .then((runs) => (runs.length || Date.now() - since > 600000) ? load() : setTimeout(poll, 1000))
    .catch(load);
  poll();
})();
"""

START_TIMEOUT_S = 120.0   # importing TensorBoard takes seconds, more on a busy machine
PROBE_TIMEOUT_S = 5.0

_servers: dict[Path, "LiveTensorBoard"] = {}   # one server per log directory in this process


class LiveTensorBoard:
    """A TensorBoard server in a child process, serving ``logdir``; see :func:`live_tensorboard`.

    Attributes:
        logdir: the directory served (absolute).
        port: the server's port on 127.0.0.1.
        local_url: ``http://127.0.0.1:<port>/`` (reachable from this machine).
        embed_url: the URL the notebook's iframe loads (a path on the notebook server's origin
            when proxied), or ``None`` where there is no Jupyter server to embed into.
    """

    def __init__(self, logdir: Path, reload_interval: int = 1) -> None:
        from rlcourse.runner import free_port

        self.logdir = logdir
        self.port = free_port()
        self.local_url = f"http://127.0.0.1:{self.port}/"
        self.embed_url: str | None = None
        self.ui_reload_s = 5.0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Own session: "Interrupt kernel" signals the kernel's process group, not this server.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(logdir), str(self.port), str(max(1, int(reload_interval)))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, text=True)
        self._output: list[str] = []
        self._listening = False
        self._ready = threading.Event()   # set once it listens, or once its output ended
        # Drains the child's output (a full pipe would block TensorBoard) and spots its URL line.
        threading.Thread(target=self._drain, daemon=True, name="tensorboard-output").start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output.append(line)
            del self._output[:-50]
            if line.startswith("URL "):
                self._listening = True
                self._ready.set()
        self._ready.set()   # EOF: the child is gone (wait_ready reports why)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until the server listens; ``RuntimeError`` (with its output) if it failed or timed out."""
        if not self._ready.wait(timeout) or not self._listening or self.proc.poll() is not None:
            output = "".join(self._output)
            self.stop()
            raise RuntimeError(f"TensorBoard did not start within {timeout:.0f} s on {self.logdir}:\n{output}")

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and TensorBoard's data server): close its stdin, then kill its process group."""
        if _servers.get(self.logdir) is self:
            del _servers[self.logdir]
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:   # whatever of the group is left (normally nothing)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    # ---------------------------------------------------------------- display
    def embed_html(self, height: int = 600) -> str:
        """The inline view: the embedded TensorBoard, or a line with its local URL where there is nothing to embed into."""
        where = html.escape(str(self.logdir))
        if self.embed_url is None:
            return (f'<div class="rlcourse-tensorboard">TensorBoard serves <code>{where}</code> at '
                    f'<a href="{self.local_url}" target="_blank">{self.local_url}</a> (for a browser on the '
                    "machine running this kernel; in JupyterLab it is shown here, embedded).</div>")
        frame_id = f"rlcourse-tensorboard-{self.port}-{secrets.token_hex(4)}"
        script = (_EMBED_JS.replace("FRAME_ID", json.dumps(frame_id))
                  .replace("RELOAD_MS", str(int(1000 * self.ui_reload_s))))
        return (f'<div class="rlcourse-tensorboard">'
                f'<div>TensorBoard on <code>{where}</code>: the charts grow while runs write, '
                f'reloaded every {self.ui_reload_s:g} s '
                f'(<a href="{html.escape(self.embed_url, quote=True)}" target="_blank">open in a new tab</a>)</div>'
                f'<iframe id="{frame_id}" data-src="{html.escape(self.embed_url, quote=True)}" width="100%" '
                f'height="{int(height)}" style="border: 1px solid #ccc" title="TensorBoard"></iframe>'
                f'<script>{script}</script></div>')

    def show(self, height: int = 600) -> None:
        """Display :meth:`embed_html` in the notebook (a plain line outside one)."""
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self.embed_html(height)))
        else:
            print(f"TensorBoard serves {self.logdir} at {self.local_url}")

    # No _repr_html_: the helper already displayed it, a cell ending in the call shows this line only.
    def __repr__(self) -> str:
        return f"LiveTensorBoard(logdir={str(self.logdir)!r}, local_url={self.local_url!r}, embed_url={self.embed_url!r})"


# --------------------------------------------------------------------------- where is the browser?
def _parent_jupyter_server() -> dict | None:
    """The running Jupyter server that started this kernel (its ``jpserver-<pid>.json`` info), if any."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    parent = os.getppid()
    try:
        for info in list_running_servers():
            if info.get("pid") == parent:
                return info
    except (OSError, ValueError):
        pass
    return None


def _proxy_answers(server: dict, port: int) -> bool:
    """Whether ``server`` proxies ``port`` (jupyter-server-proxy installed and enabled there)."""
    url = f"{server['url'].rstrip('/')}/proxy/{port}/data/environment"
    request = urllib.request.Request(url, headers={"Authorization": f"token {server.get('token', '')}"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200 and "data_location" in json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


def embed_url(port: int) -> str | None:
    """The URL a notebook page loads to show the server on ``port`` (``None``: nothing to embed into).

    Under JupyterHub: ``<JUPYTERHUB_SERVICE_PREFIX>proxy/<port>/`` (the hub's single-user servers
    are expected to have jupyter-server-proxy, as ``make lab`` has). Under a local Jupyter server:
    its ``<base_url>proxy/<port>/`` if that answers, else the direct localhost URL.
    """
    from rlcourse.runner import hub_proxy_path

    hub_path = hub_proxy_path(port)
    if hub_path:
        return hub_path
    server = _parent_jupyter_server()
    if server is None:
        return None
    if _proxy_answers(server, port):
        return server["base_url"].rstrip("/") + f"/proxy/{port}/"
    return f"http://127.0.0.1:{port}/"


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


# --------------------------------------------------------------------------- the helper
def live_tensorboard(logdir: str | os.PathLike = "runs", *, height: int = 600, reload_interval: int = 1,
                     ui_reload_s: float = 5.0, display: bool = True) -> LiveTensorBoard:
    """Start TensorBoard on ``logdir`` (created if missing) and show it inline; call it before training.

    Pass the folder that *contains* the runs (``runs/``, not ``runs/ant``): every run written
    into it later appears, including one started from a terminal with
    ``rlcourse train ... --run-dir runs/<name>``. Calling it again for the same folder in the
    same kernel shows the running server again instead of starting another one.

    Args:
        logdir: the directory to serve.
        height: the iframe's height in pixels.
        reload_interval: seconds between the server's rescans of the event files (integer).
        ui_reload_s: seconds between the embedded app's reloads of its charts (set in the
            browser for TensorBoard on the notebook's origin, i.e. behind the proxy).
        display: show it now (off: just start it; ``.show()`` displays it later).

    Returns:
        The :class:`LiveTensorBoard`; ``.stop()`` ends it (the kernel's exit does too).
    """
    path = Path(logdir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = _servers.get(path)
    if server is None or not server.alive():
        server = LiveTensorBoard(path, reload_interval=reload_interval)
        _servers[path] = server
        server.wait_ready()
        server.embed_url = embed_url(server.port)
    server.ui_reload_s = float(ui_reload_s)
    if display:
        server.show(height)
    return server


def stop_all() -> None:
    """Stop every server this process started (registered to run at exit)."""
    for server in list(_servers.values()):
        server.stop()


atexit.register(stop_all)
