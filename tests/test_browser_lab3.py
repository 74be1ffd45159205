"""Lab 3 in a real browser: JupyterLab in headless Chromium, "Run All", the widget panel renders.

What a student does on day one: open the released lab 3 notebook in JupyterLab and choose
Run > Run All Cells. Execution runs through the setup, the ipywidgets reward-weight panel
and its matplotlib plot, and stops at the first exercise (``raise NotImplementedError``).
This test does exactly that with the Debian ``chromium`` package driven by Playwright
(``executable_path=``; Playwright never downloads a browser here) against ``jupyter lab``
serving a temporary copy of ``labs/``, and checks in the rendered page:

* the panel (CSS class ``rlcourse-reward-panel``) is displayed as live widgets: sliders and a
  button, not the widget's text repr or "Error displaying widget";
* a matplotlib figure is rendered as an image in an output area, before the stopping point;
* the panel answers: nudging a slider with the keyboard changes its value and the kernel
  redraws the panel's plot (lab 3's preview; no training is started);
* the first error is the student exercise's ``NotImplementedError`` and nothing after it ran.

A screenshot goes to the pytest tmp dir and, when set, to ``$RLCOURSE_ARTIFACTS``
(``FAILED_<name>.png`` when the test fails in the browser).

Chromium comes from ``apt-get install chromium`` (the Makefile's set-up does it). The test
skips only where it cannot be installed (no apt-get, outside CI); in CI it must run.
JupyterLab, its kernel and the browser are stopped at the end, also on failure.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from browser_helpers import CHROMIUM_ARGS, JupyterLab, chromium_executable, running_jupyter_lab, save_screenshot

REPO = Path(__file__).resolve().parents[1]
LAB = "lab3_reward_shaping"
LAB_NOTEBOOK = f"{LAB}/{LAB}.ipynb"
PANEL_CLASS = "rlcourse-reward-panel"

# The machine running the suite is small and busy: every wait is generous.
UI_TIMEOUT_MS = 180_000
RUN_ALL_TIMEOUT_MS = 600_000  # Run All executes everything up to the first exercise

pytestmark = [pytest.mark.slow]


# --------------------------------------------------------------------------- jupyter lab
@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[JupyterLab]:
    """A JupyterLab server on a temporary copy of ``labs/``; stopped (kernels included) even on failure."""
    root = tmp_path / "labs"
    shutil.copytree(REPO / "labs", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    home = tmp_path / "jupyter-home"
    home.mkdir()
    with running_jupyter_lab(root, home) as server:
        yield server


# --------------------------------------------------------------------------- the browser part
# Where each thing is, by cell index, once Run All has stopped.
PAGE_STATE_JS = """
(panelClass) => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const isError = (o) => o.matches('[data-mime-type="application/vnd.jupyter.stderr"]')
                         && /Traceback|Error/.test(o.textContent);
  const firstError = cells.findIndex(c => [...c.querySelectorAll('.jp-OutputArea-output')].some(isError));
  const errorText = firstError >= 0 ? cells[firstError].querySelector('.jp-OutputArea').textContent : '';
  const panelCell = cells.findIndex(c => c.querySelector('.' + panelClass));
  const plotCells = cells.map((c, i) => [...c.querySelectorAll('.jp-OutputArea-output img')]
                                  .some(img => img.complete && img.naturalWidth > 50 && img.naturalHeight > 50) ? i : -1)
                         .filter(i => i >= 0);
  const ranAfter = cells.slice(firstError + 1)
                        .filter(c => c.classList.contains('jp-CodeCell'))
                        .map(c => c.querySelector('.jp-InputPrompt').textContent.trim())
                        .filter(p => /\\d|\\*/.test(p));
  return {cells: cells.length, firstError, errorText: errorText.slice(0, 3000), panelCell, plotCells, ranAfter};
}
"""


def run_all_and_check(server: JupyterLab, notebook: str, tmp_path: Path, shot_name: str) -> dict:
    """Open ``notebook`` in JupyterLab, Run > Run All Cells, assert the panel/plot/stop; returns page state."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            console_errors: list[str] = []
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            page.goto(f"{server.url}/lab/tree/{notebook}?token={server.token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible")
            # The kernel is up when the status bar says so ("Python 3 (ipykernel) | Idle").
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(state="visible")

            # Run > Run All Cells, through the menu bar like a student.
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # Execution stops at the first error (the first exercise, checked below): wait for a
            # traceback, then for the kernel.
            page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                         has_text=re.compile(r"Traceback|Error")).first.wait_for(
                state="attached", timeout=RUN_ALL_TIMEOUT_MS)
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(
                state="visible", timeout=RUN_ALL_TIMEOUT_MS)

            stopped = page.evaluate(PAGE_STATE_JS, PANEL_CLASS)
            assert "NotImplementedError" in stopped["errorText"], (
                f"Run All stopped in cell {stopped['firstError']}, not at the first exercise:\n{stopped['errorText']}")

            panel = page.locator(f".{PANEL_CLASS}").first
            panel.scroll_into_view_if_needed()
            panel.wait_for(state="visible")
            sliders = panel.locator(".widget-slider")
            buttons = panel.locator("button.jupyter-button")
            assert sliders.count() >= 1, "the reward panel shows no slider"
            assert buttons.count() >= 1, "the reward panel shows no button"
            assert sliders.first.is_visible() and buttons.first.is_visible()

            # Some plot is drawn: wait until an image in an output area has actually loaded.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                ".some(img => img.complete && img.naturalWidth > 50 && img.naturalHeight > 50)")

            # The panel is live, not a picture: nudging its first slider with the keyboard makes the
            # kernel redraw the panel's plot (lab 3's preview needs no training, so this is cheap).
            plot = panel.locator(".jp-OutputArea-output img").first
            plot.wait_for(state="visible")
            plot.evaluate("img => img.setAttribute('data-rlcourse-old', '1')")  # the redraw is a new <img>
            readout = panel.locator(".widget-readout").first
            value_before = readout.inner_text().strip()
            panel.locator(".widget-slider .noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function("([el, v]) => el.textContent.trim() !== v",
                                   arg=[readout.element_handle(), value_before])
            page.wait_for_function(
                "panel => [...panel.querySelectorAll('.jp-OutputArea-output img')].some(img =>"
                " !img.hasAttribute('data-rlcourse-old') && img.complete && img.naturalWidth > 50)",
                arg=panel.element_handle())

            state = page.evaluate(PAGE_STATE_JS, PANEL_CLASS)
            page_text = page.locator(".jp-Notebook").inner_text()
            panel.evaluate("el => el.scrollIntoView({block: 'start'})")
            save_screenshot(page, page.screenshot(), tmp_path, shot_name)
        except Exception:
            try:  # what the page looked like when it went wrong
                save_screenshot(page, page.screenshot(timeout=30_000), tmp_path, f"FAILED_{shot_name}")
            except Exception:
                pass
            raise
        finally:
            browser.close()

    assert "Error displaying widget" not in page_text and "Model not found" not in page_text, page_text[-3000:]
    assert state["firstError"] >= 0, state
    assert "NotImplementedError" in state["errorText"], f"the first error is not the exercise's:\n{state['errorText']}"
    assert 0 <= state["panelCell"] < state["firstError"], f"the panel must come before the first exercise: {state}"
    assert any(i <= state["firstError"] for i in state["plotCells"]), f"no plot before the first exercise: {state}"
    assert not state["ranAfter"], f"cells after the first exercise ran: {state}"
    assert not console_errors, f"JavaScript errors on the page: {console_errors}"
    return state


# --------------------------------------------------------------------------- tests
@pytest.fixture
def lab3_release() -> str:
    """The released lab 3 notebook, relative to ``labs/`` (checked before any server starts)."""
    if not (REPO / "solutions" / LAB).exists():
        pytest.skip(f"{LAB} is not in solutions/")
    assert (REPO / "labs" / LAB_NOTEBOOK).exists(), f"labs/{LAB_NOTEBOOK} is missing: run `make labs`"
    chromium_executable()  # skip or fail now, not after JupyterLab started
    return LAB_NOTEBOOK


@pytest.mark.timeout(1200)
def test_lab3_run_all_shows_the_reward_panel(lab3_release, jupyter_lab, tmp_path) -> None:
    started = time.monotonic()
    try:
        state = run_all_and_check(jupyter_lab, lab3_release, tmp_path, "lab3_reward_panel.png")
    except BaseException:
        print(f"jupyter lab log (end):\n{jupyter_lab.log()}")  # shown by pytest with the failure
        raise
    print(f"lab 3: {time.monotonic() - started:.1f} s in the browser; page: {state}")
