"""Live TensorBoard in a real browser: the chart embedded in a notebook grows while the cell trains.

A lecturer's demo, end to end. JupyterLab serves under ``/user/test/`` as a JupyterHub
single-user server does, with jupyter-server-proxy (a dev dependency). One notebook cell calls
:func:`rlcourse.teaching.live_tensorboard.live_tensorboard` on ``runs/`` and then trains PPO on
CartPole into ``runs/cartpole``, one logged row per iteration, until the test drops a stop file.
In headless Chromium (Debian's, driven by Playwright) the test checks, while that cell is still
running:

* the output holds an iframe whose URL goes through the proxy under the base URL
  (``/user/test/proxy/<port>/``), and TensorBoard's app loaded in it and lists the run;
* the chart of one of the run's scalars in that iframe shows a later step than before (its
  data table follows the newest point) while the cell's prompt still shows ``[*]``.

Then the test stops the training, shuts JupyterLab down and checks that no process it started
(server, kernel, TensorBoard and its data server) survived.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest

from browser_helpers import (CHROMIUM_ARGS, chromium_executable, processes_mentioning, running_jupyter_lab,
                             save_screenshot)

pytestmark = [pytest.mark.slow]

BASE_URL = "/user/test/"
TAG = "losses/value_loss"   # logged at every iteration (log_interval_steps=1)
UI_TIMEOUT_MS = 180_000     # a busy 2-core machine: kernel start, TensorBoard import

# The cell a lecturer runs: TensorBoard first, then training that writes while the chart shows.
# The callback makes the run last until the test is done looking (stop file, or 5 minutes).
CELL = '''\
import time
from pathlib import Path
import torch
import rlcourse
from rlcourse.runner import Runner
from rlcourse.teaching.live_tensorboard import live_tensorboard

torch.set_num_threads(1)
tb = live_tensorboard("runs", ui_reload_s=2)
env = rlcourse.envs.make("CartPole-v1", num_envs=4, seed=0)
agent = rlcourse.PPO(env, seed=0, num_steps_per_env=32, num_mini_batches=2, num_learning_epochs=1)
stop, deadline = Path("runs/stop"), time.monotonic() + 300

def keep_going(runner):
    time.sleep(0.2)   # a few logged points per second, whatever the machine's speed
    return not stop.exists() and time.monotonic() < deadline

Runner(agent, env, run_dir="runs/cartpole", log_interval_steps=1, eval_episodes=0, progress=False,
       callback=keep_going).learn(10_000_000)
print("TRAINING DONE at step", agent.global_step)
'''

# In the iframe's document: the last step the chart of ``tag`` shows (its data table's "Step"
# column, which follows the newest point), or -1 while there is no such chart with data.
CHART_STEP_JS = """
(tag) => {
  for (const card of document.querySelectorAll('scalar-card')) {
    const title = card.querySelector('tb-truncated-path');
    if (!title || title.getAttribute('title') !== tag) continue;
    const heads = [...card.querySelectorAll('tb-data-table-header-cell')].map(h => h.innerText.trim());
    const cells = [...card.querySelectorAll('tb-data-table-content-row tb-data-table-content-cell')];
    const i = heads.indexOf('Step');
    const step = i >= 0 && cells[i] ? cells[i].innerText.replace(/[,\\s]/g, '') : '';   // "80,768"
    if (/^\\d+$/.test(step)) return Number(step);
  }
  return -1;
}
"""


def _write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.timeout(600)
def test_embedded_tensorboard_grows_while_the_cell_trains(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()   # skip or fail before anything starts
    pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is a dev dependency")
    root = tmp_path / "course"
    root.mkdir()
    _write_notebook(root / "live.ipynb")
    logdir = (root / "runs").resolve()   # as the helper names it on the server's command line
    home = tmp_path / "jupyter-home"
    home.mkdir()
    started = time.monotonic()
    phases: dict[str, float] = {}   # seconds since the start at which each step was done
    mark = lambda name: phases.__setitem__(name, round(time.monotonic() - started, 1))  # noqa: E731

    with running_jupyter_lab(root, home, base_url=BASE_URL) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        mark("lab up")
        try:
            page.goto(f"{server.url}/lab/tree/live.ipynb?token={server.token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible")
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(state="visible")
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            mark("cell started")

            # The embedded TensorBoard, through the proxy under the base URL.
            iframe = page.locator(".rlcourse-tensorboard iframe")
            iframe.wait_for(state="attached")
            # Its page loads the app once TensorBoard lists a run (not on an empty logdir).
            page.wait_for_function("f => f.getAttribute('src')", arg=iframe.element_handle(), polling=500)
            src = iframe.get_attribute("src")
            mark("iframe loads")
            assert re.fullmatch(rf"{re.escape(BASE_URL)}proxy/\d+/", src or ""), src
            frame = iframe.element_handle().content_frame()
            assert frame is not None
            frame.wait_for_load_state("load")
            # TensorBoard's app may already have set its route (``#timeseries``): compare without it.
            assert frame.url.split("#")[0] == f"http://127.0.0.1:{server.port}{src}", frame.url
            # The app lists the run; its chart of TAG (found with the tag filter, as a student would) grows.
            frame.locator("runs-selector", has_text="cartpole").wait_for(state="visible")
            frame.locator("metrics-tag-filter input").fill(f"^{TAG}$")
            frame.wait_for_function(f"() => ({CHART_STEP_JS})({TAG!r}) > 0", polling=500)
            first = frame.evaluate(CHART_STEP_JS, TAG)
            mark("chart shown")
            frame.wait_for_function(f"() => ({CHART_STEP_JS})({TAG!r}) > {first}", polling=500)
            later = frame.evaluate(CHART_STEP_JS, TAG)
            mark("chart grew")
            prompt = page.locator(".jp-Cell .jp-InputPrompt").first.inner_text()
            assert "*" in prompt, f"the cell finished before the chart was seen growing (prompt {prompt!r})"
            assert not (logdir / "stop").exists()
            save_screenshot(page, page.screenshot(), tmp_path, "live_tensorboard.png")

            # Let the training finish; the cell ends normally.
            (logdir / "stop").touch()
            page.locator(".jp-OutputArea-output", has_text="TRAINING DONE").wait_for(state="attached")
            page_text = page.locator(".jp-Notebook").inner_text()
            mark("cell done")
        except Exception:
            try:
                save_screenshot(page, page.screenshot(timeout=30_000), tmp_path, "FAILED_live_tensorboard.png")
            except Exception:
                pass
            print(f"jupyter lab log (end):\n{server.log()}")
            raise
        finally:
            browser.close()

    assert "Traceback" not in page_text, page_text[-3000:]
    assert later > first > 0, (first, later)
    # TensorBoard (and its data server) went with the kernel: nothing serves the logdir any more.
    deadline = time.monotonic() + 30
    while (left := processes_mentioning(str(logdir))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"TensorBoard processes survived the kernel: {left}"
    mark("all stopped")
    print(f"live TensorBoard: chart at step {first}, then {later}; seconds: {phases}")
