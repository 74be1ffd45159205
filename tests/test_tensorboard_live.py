"""TensorBoard as a student sees it: a live server answering its HTTP API while PPO trains.

``tests/test_cli.py`` reads the event files directly; these tests go through a real
TensorBoard server instead:

* rlcourse's own :func:`rlcourse.runner.start_tensorboard` (what ``--tensorboard`` uses),
  started in a child process on a free localhost port, serves the scalars of a short PPO
  run on CartPole that trains *after* the server came up. The test polls the scalars
  plugin's HTTP API until the tags appear (TensorBoard rescans the logdir every few
  seconds) and compares the served values with ``progress.csv``.
* ``rlcourse train ... --tensorboard`` prints a URL that answers HTTP 200 while it trains.

Every server runs in its own process group, which is killed at the end of the test even
when it fails, so no TensorBoard (or its Rust data server child) outlives the test.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from rlcourse.algos import PPO

from browser_helpers import group_alive

# Real servers and training runs (about 20 s each on a busy 2-core machine), like the CLI round trips.
pytestmark = [pytest.mark.slow]

# The tags every PPO run logs (README / runner docstring); the course material refers to them by name.
CHART_TAGS = ("charts/episode_return", "charts/episode_length", "charts/steps_per_second")
LOSS_TAGS = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
             "losses/clip_fraction", "losses/explained_variance")

START_TIMEOUT_S = 120   # TensorBoard imports TensorFlow-free but still slowly on a loaded 2-core machine
POLL_TIMEOUT_S = 120    # the default reload interval is 5 s; generous for a busy machine

# Child process: rlcourse's helper starts the server in a daemon thread; keep the process
# alive until the test closes our stdin (or dies, which closes it too).
SERVER_SCRIPT = """
import sys
from rlcourse.runner import start_tensorboard
print("URL", start_tensorboard(sys.argv[1], port=int(sys.argv[2])), flush=True)
sys.stdin.read()
"""


# --------------------------------------------------------------------------- process helpers
def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RLCOURSE_NO_PROGRESS="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("RLCOURSE_DEBUG", None)
    return env


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> tuple[re.Match, str]:
    """Read ``proc.stdout`` until a line matches ``pattern``; fails with everything read so far.

    A daemon thread keeps draining the pipe afterwards, so a chatty child never blocks on a full pipe.
    """
    lines: list[str] = []
    found: list[re.Match] = []
    event = threading.Event()

    def reader() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if not found and (m := re.search(pattern, line)):
                found.append(m)
                event.set()
        proc.stdout.close()  # type: ignore[union-attr]
        event.set()  # end of output

    threading.Thread(target=reader, daemon=True).start()
    event.wait(timeout)
    text = "".join(lines)
    if not found:
        status = "still running" if proc.poll() is None else f"exited with {proc.returncode}"
        pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s (process {status}); output:\n{text}")
    return found[0], text


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group we started (the server and any child it spawned) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (e.g. the data server) in the same group
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)
    if proc.stdin is not None:
        proc.stdin.close()


def _get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def _get_json(base: str, path: str, **query: str) -> Any:
    url = base.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    status, body = _get(url)
    assert status == 200, f"{url} answered {status}"
    return json.loads(body)


def _poll(what: str, fn: Callable[[], Any], timeout: float = POLL_TIMEOUT_S, every: float = 1.0) -> Any:
    """Call ``fn`` until it returns something truthy (HTTP errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not there after {timeout:.0f} s (last answer: {last!r})")
        time.sleep(every)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def tensorboard_server(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """``start(logdir) -> url``: rlcourse's ``start_tensorboard`` in a child process, killed afterwards."""
    from rlcourse.runner import free_port

    started: list[subprocess.Popen] = []

    def start(logdir: Path) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(logdir), str(free_port())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_child_env(), cwd=tmp_path, start_new_session=True,
        )
        started.append(proc)
        match, _ = _read_until(proc, r"^URL (http://127\.0\.0\.1:\d+/)", START_TIMEOUT_S)
        return match.group(1)

    try:
        yield start
    finally:
        for proc in started:
            _kill_group(proc)
        for proc in started:
            assert not group_alive(proc.pid), "a TensorBoard process survived the test"


# --------------------------------------------------------------------------- tests
@pytest.mark.timeout(600)
def test_a_server_started_before_the_run_serves_its_scalars(tensorboard_server, make_env, tmp_path) -> None:
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    url = tensorboard_server(run_dir)  # up before any event file exists, like `rlcourse train --tensorboard`

    status, body = _get(url)
    assert status == 200 and b"<html" in body.lower()[:2000]

    # A few tiny PPO iterations; log every iteration so there are several points per tag.
    env = make_env("CartPole-v1", num_envs=4, seed=0)
    agent = PPO(env, seed=0, preset=None, num_steps_per_env=32, num_learning_epochs=2, num_mini_batches=2,
                actor_hidden=(16, 16), critic_hidden=(16, 16), learning_rate=3e-3)
    agent.learn(6 * 4 * 32, run_dir=run_dir, eval_episodes=0, progress=False, log_interval_steps=1)
    with (run_dir / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6

    # TensorBoard names a run by its folder relative to the logdir: events in the logdir itself are ".".
    runs = _poll("run list", lambda: _get_json(url, "/data/runs"))
    assert runs == ["."], runs
    wanted = set(CHART_TAGS + LOSS_TAGS)
    tags = _poll("scalar tags", lambda: (t := _get_json(url, "/data/plugin/scalars/tags"))
                 and wanted <= set(t.get(".", {})) and t)
    assert set(tags) == {"."}
    missing = wanted - set(tags["."])
    assert not missing, f"missing tags {sorted(missing)}; served: {sorted(tags['.'])}"

    # Every logged row is served, at its global step, with the value the runner wrote (float32).
    for tag in CHART_TAGS + LOSS_TAGS:
        expected = [(int(r["global_step"]), float(r[tag])) for r in rows if r.get(tag)]
        assert expected, tag
        points = _poll(f"all points of {tag}",
                       lambda: (p := _get_json(url, "/data/plugin/scalars/scalars", run=".", tag=tag))
                       and len(p) >= len(expected) and p)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for p in points for v in p), (tag, points)
        served = [(int(step), float(value)) for _wall, step, value in points]
        assert [s for s, _ in served] == [s for s, _ in expected], tag
        for (step, got), (_, want) in zip(served, expected):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6), (tag, step)
        assert all(w > 0 for w, _, _ in points), tag  # wall times

    returns = [v for _, _, v in _get_json(url, "/data/plugin/scalars/scalars", run=".", tag="charts/episode_return")]
    lengths = [v for _, _, v in _get_json(url, "/data/plugin/scalars/scalars", run=".", tag="charts/episode_length")]
    # CartPole pays +1 per step, so the mean return equals the mean length, between 8 and 500.
    assert all(8 <= r <= 500 for r in returns) and returns == pytest.approx(lengths)
    sps = [v for _, _, v in _get_json(url, "/data/plugin/scalars/scalars", run=".", tag="charts/steps_per_second")]
    assert all(v > 0 for v in sps)

    # An unknown tag is an error, not an empty list: the test above could not pass on a wrong query.
    with pytest.raises(urllib.error.HTTPError):
        _get(url.rstrip("/") + "/data/plugin/scalars/scalars?" + urllib.parse.urlencode(
            {"run": ".", "tag": "charts/no_such_tag"}))


@pytest.mark.timeout(600)
def test_train_cli_tensorboard_url_answers(cli_command, tiny_ppo_sets, tmp_path) -> None:
    run_dir = tmp_path / "run"
    # More steps than we wait for: the server lives only as long as the training process,
    # which we kill once the URL has answered.
    proc = subprocess.Popen(
        [*cli_command, "train", "ppo", "--env", "CartPole-v1", "--num-envs", "4", "--total-steps", "10000000",
         "--seed", "0", "--run-dir", str(run_dir), "--tensorboard", "--no-progress", "--eval-episodes", "0",
         *tiny_ppo_sets],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(_child_env(), JUPYTERHUB_SERVICE_PREFIX="/user/demo/"), cwd=tmp_path, start_new_session=True,
    )
    try:
        # Run from a JupyterHub terminal, it also names the path that reaches the server through the hub.
        hub, output = _read_until(proc, r"TensorBoard through JupyterHub: open (/user/demo/proxy/(\d+)/) ",
                                  START_TIMEOUT_S)
        match = re.search(r"TensorBoard: (http://127\.0\.0\.1:(\d+)/)", output)
        assert match and match.group(2) == hub.group(2), output
        url = match.group(1)
        status, body = _get(url)
        assert status == 200 and b"<html" in body.lower()[:2000]
        # The same server shows the run's scalars once the first iterations are logged.
        tags = _poll("scalar tags from the CLI's server",
                     lambda: (t := _get_json(url, "/data/plugin/scalars/tags").get(".", {}))
                     and "charts/episode_return" in t and t)
        assert set(CHART_TAGS) <= set(tags), sorted(tags)
        assert proc.poll() is None, "training ended before the check; the URL must be checked while it serves"
    finally:
        _kill_group(proc)
    assert not group_alive(proc.pid), "the training process (or its TensorBoard) survived the test"
