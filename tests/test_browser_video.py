"""Videos play inline in JupyterLab: headless Chromium (Playwright) on a throw-away ``jupyter lab``.

``rlcourse.video.show_video`` embeds an H.264 MP4 as a ``data:`` URI in an HTML ``<video>``.
Two ways a lecturer meets one, both checked here on a small synthetic clip (no MuJoCo needed):

* a notebook reopened with its saved outputs: JupyterLab treats it as untrusted and sanitizes
  its HTML (it keeps a ``<video src=...>``, but would strip the ``src`` of a nested ``<source>``);
* a cell run in the browser (Run All): the output is trusted.

Each video must decode (a frame, a size, a duration) and, once played, advance. The site side
(the same markup on a built lecture page, from file:// and http) is in ``test_book.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from browser_helpers import CHROMIUM_ARGS, chromium_executable, plays, running_jupyter_lab, save_screenshot

pytest.importorskip("imageio_ffmpeg", reason="MP4 videos need imageio-ffmpeg (rlcourse[video])")

UI_TIMEOUT_MS = 180_000  # the machine running the suite is small and busy

pytestmark = [pytest.mark.slow]

# A square moving across a dark frame: 3 s at 10 fps, a few kB as H.264.
MAKE_CLIP = """import numpy as np
from rlcourse.video import Clip, show_video

frames = []
for t in range(30):
    frame = np.full((96, 128, 3), 40, dtype=np.uint8)
    frame[30:60, 4 * t:4 * t + 30] = (230, 120, 20)
    frames.append(frame)
show_video(Clip(frames, fps=10).labelled("moving square"))"""

# Every <video> in an output area: decoded, no error.
VIDEOS_JS = """
() => [...document.querySelectorAll('.jp-OutputArea-output video')].map(v =>
    ({ready: !v.error && v.readyState >= 2 && v.videoWidth > 0 && v.duration > 0,
      src: (v.currentSrc || '').slice(0, 22)}))
"""


@pytest.mark.timeout(900)
def test_videos_play_inline_in_jupyterlab(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from rlcourse.video import Clip, show_video

    chromium_executable()  # skip or fail now, not after JupyterLab started
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir(), home.mkdir()
    # Cell 0 carries a saved output (made here, as the kernel would), cell 1 runs in the browser.
    namespace: dict = {}
    exec(MAKE_CLIP.rsplit("\n", 1)[0], namespace)
    saved = show_video(Clip(namespace["frames"], fps=10).labelled("saved output")).data
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(MAKE_CLIP, outputs=[nbformat.v4.new_output(
            "display_data", data={"text/html": saved, "text/plain": "<IPython.core.display.HTML object>"})]),
        nbformat.v4.new_code_cell(MAKE_CLIP),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "video.ipynb")

    with running_jupyter_lab(root, home) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            page.goto(f"{lab.url}/lab/tree/video.ipynb?token={lab.token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible")
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(state="visible")
            # The saved output of an untrusted notebook: sanitized, still a playable video.
            page.wait_for_function(f"() => ({VIDEOS_JS})().length === 1 && ({VIDEOS_JS})()[0].ready")
            plays(page.locator(".jp-OutputArea-output video").first)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # Run All replaces cell 0's output and fills cell 1's: two videos, both decoded.
            page.wait_for_function(f"() => ({VIDEOS_JS})().length === 2 && ({VIDEOS_JS})().every(v => v.ready)")
            page.locator("#jp-main-statusbar", has_text=re.compile(r"\| Idle")).wait_for(state="visible")
            videos = page.locator(".jp-OutputArea-output video")
            for i in range(videos.count()):
                plays(videos.nth(i))
            sources = page.evaluate(VIDEOS_JS)
            save_screenshot(page, page.screenshot(), tmp_path, "jupyterlab_videos.png")
        except Exception:
            try:
                save_screenshot(page, page.screenshot(timeout=30_000), tmp_path, "FAILED_jupyterlab_videos.png")
            except Exception:
                pass
            print(f"jupyter lab log (end):\n{lab.log()}")
            raise
        finally:
            browser.close()
    assert all(v["src"].startswith("data:video/mp4;base64") for v in sources), sources
