"""Shared by the browser tests: the Debian chromium that Playwright drives (never a downloaded one),
and a throw-away JupyterLab server (:class:`JupyterLab`, :func:`running_jupyter_lab`)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

# Headless chromium on a small container: /dev/shm is tiny and there is no GPU.
CHROMIUM_ARGS = ["--disable-dev-shm-usage", "--disable-gpu"]


def chromium_executable() -> str:
    """The Debian chromium binary, or skip/fail with the reason it is missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    why = "the Debian `chromium` package is not installed"
    if os.environ.get("CI") or shutil.which("apt-get"):
        # Installable here (the Makefile's set-up runs `apt-get install -y chromium`): a missing
        # browser is a broken set-up, never a reason to skip.
        pytest.fail(f"{why}; run `make setup` or `apt-get install -y chromium`")
    pytest.skip(f"{why} and this machine has no apt-get to install it")


def save_screenshot(page, png: bytes, tmp_path: Path, name: str) -> Path:
    """Write a screenshot to the test's tmp dir and, when set, to ``$RLCOURSE_ARTIFACTS``."""
    path = tmp_path / name
    path.write_bytes(png)
    artifacts = os.environ.get("RLCOURSE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


# --------------------------------------------------------------------------- jupyter lab
# The machine running the suite is small and busy: every wait is generous.
SERVER_START_S = 180


def _free_port() -> int:
    from rlcourse.runner import free_port

    return free_port()


def _write_lab_settings(settings: Path) -> None:
    """User settings for the throw-away JupyterLab: no news/update pop-ups over the notebook."""
    folder = settings / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def processes_mentioning(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (a path unique to this test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


class JupyterLab:
    """``jupyter lab`` on a free localhost port with a token, rooted at ``root``; see :meth:`stop`.

    ``base_url`` is the server's URL prefix: ``"/user/test/"`` serves everything the way a
    JupyterHub single-user server does; :attr:`url` includes it.
    """

    def __init__(self, root: Path, home: Path, base_url: str = "/") -> None:
        self.root = root
        self.home = home
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self.url = f"http://127.0.0.1:{self.port}{self.base_url}".rstrip("/")
        self.log_path = home / "jupyter.log"
        runtime = home / "runtime"
        settings = home / "lab-settings"
        _write_lab_settings(settings)
        env = dict(os.environ)
        env.update({
            # Isolated from the user's Jupyter set-up; the kernels' connection files land in
            # runtime/, whose path identifies every process this server starts.
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(runtime),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "IPYTHONDIR": str(home / "ipython"),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        })
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={root}", f"--ServerApp.base_url={self.base_url}"]
        if os.geteuid() == 0:  # containers and CI runners often run as root
            cmd.append("--allow-root")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.marker = str(runtime)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = SERVER_START_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=10) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log()}")
            time.sleep(1)

    def stop(self) -> None:
        """Shut the server down (it stops its kernels), then kill whatever of ours is left."""
        started = set(processes_mentioning(self.marker))  # kernels run in their own sessions
        if self.proc.poll() is None:
            try:
                req = urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST")
                urllib.request.urlopen(req, timeout=30).close()
                self.proc.wait(timeout=60)
            except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        for pid in started | set(processes_mentioning(self.marker)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def group_alive(pgid: int, grace_s: float = 30) -> bool:
    """Whether process group ``pgid`` still has members after waiting up to ``grace_s`` seconds."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)


@contextlib.contextmanager
def running_jupyter_lab(root: Path, home: Path, base_url: str = "/") -> Iterator[JupyterLab]:
    """A ready :class:`JupyterLab` on ``root``; on the way out it is stopped (kernels included),
    also on failure, and the test fails if any of its processes survived."""
    server = JupyterLab(root, home, base_url=base_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        deadline = time.monotonic() + 30
        while (left := processes_mentioning(server.marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes of the test's JupyterLab survived: {left}"
        assert not group_alive(server.proc.pid), "the jupyter lab process group survived"


def plays(video) -> None:
    """Play ``video`` (muted: browsers refuse to autoplay sound) and wait until its time advances."""
    video.scroll_into_view_if_needed()
    video.evaluate("v => { v.muted = true; return v.play(); }")
    video.evaluate("""v => new Promise((resolve, reject) => {
        const t0 = v.currentTime, deadline = Date.now() + 20000;
        (function poll() {
            if (v.error) reject(new Error('video error ' + v.error.code));
            else if (v.currentTime > t0 + 0.2 || v.currentTime < t0) resolve(true);
            else if (Date.now() > deadline) reject(new Error('video does not advance'));
            else setTimeout(poll, 100);
        })(); })""")
