"""The course site (`make book`): a reduced build, checked on disk and in a real browser.

The full site executes all eight lectures (minutes); these tests build the same
configuration (book/_config.yml, book/_ext/) with a reduced table of contents: the syllabus
(landing page), lecture 1 (executed, ~10 s), lecture 5 (executed, ~30 s: the cheapest lecture
with robot videos, built whole by the real pipeline) and the five student labs (never executed).
Then:

* no page holds an nbgrader solution or hidden-test marker, nor a line of the solutions' code,
  and a page that does makes the build fail;
* in Debian's chromium (Playwright), from ``python -m http.server`` and from ``file://``, with
  every non-local request blocked: the landing page is the syllabus, the lecture shows its
  matplotlib figures as loaded images (an ``interact`` plot included) and typeset math,
  lecture 5 plays its MuJoCo videos (embedded H.264, decoded and advancing), and search finds a
  lecture;
* the videos are embedded in the page (nothing to copy) and keep to the budget per video;
* each lecture's reveal.js slides (book/_ext/slides.py, from the notebook the build executed)
  are linked from its page and, in the browser, render a deck that moves on with the arrow
  key, with a visible figure and typeset math, without any non-local request;
* in JupyterLab, the executed lecture 1 presented with RISE (the notebook toolbar's "Render as
  Reveal Slideshow"): the deck opens, the arrow key moves to section 1, a figure shows.

What a lecture page must show is listed in LECTURE_CHECKS (and each lecture checked there is
in REDUCED_LECTURES).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from browser_helpers import CHROMIUM_ARGS, chromium_executable, plays, running_jupyter_lab

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
LABS = sorted(p.name for p in (REPO / "labs").iterdir() if (p / f"{p.name}.ipynb").exists())
REDUCED_LECTURES = ["01_rl_loop_and_mdps", "05_massively_parallel_simulation"]
# nbgrader's markers in the instructor notebooks (solutions/); none may reach the site.
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
BUILD_TIMEOUT_S = 420  # 57-83 s measured at load 6-8 on 2 cores (lecture 5: ~30 s of CPU); the suite's machine is busy
UI_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.slow]


# --------------------------------------------------------------------------- building
def build_book(source: Path, toc: Path | None, out: Path) -> subprocess.CompletedProcess:
    """``jupyter-book build`` as ``make book`` runs it, into ``out/_build/html``."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend
    env["RLCOURSE_NO_PROGRESS"] = "1"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(source), "--path-output", str(out)]
    if toc is not None:
        cmd += ["--toc", str(toc)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The reduced site's HTML folder (built once for this module)."""
    tmp = tmp_path_factory.mktemp("book")
    toc = tmp / "_toc.yml"
    chapters = [f"course/{name}" for name in REDUCED_LECTURES] + [f"labs/{lab}/{lab}" for lab in LABS]
    toc.write_text("format: jb-book\nroot: course/00_syllabus\nchapters:\n"
                   + "".join(f"  - file: {c}\n" for c in chapters))
    started = time.monotonic()
    result = build_book(BOOK, toc, tmp)
    print(f"reduced site built in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, f"jupyter-book build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    html_dir = tmp / "_build" / "html"
    assert (html_dir / "index.html").exists(), sorted(p.name for p in html_dir.iterdir())
    return html_dir


def page_text(path: Path) -> str:
    """A built page as a reader sees its text: tags removed, entities decoded (code is split in spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(errors="replace")))


def instructor_only_lines(lab: str) -> list[str]:
    """Lines of the lab's solutions and hidden tests that appear nowhere in its student version."""
    source = json.loads((REPO / "solutions" / lab / f"{lab}.ipynb").read_text())
    student = json.loads((REPO / "labs" / lab / f"{lab}.ipynb").read_text())
    handed_out = "\n".join("".join(cell["source"]) for cell in student["cells"])
    found, inside = [], False
    for cell in source["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)", line):
                inside = True
            elif re.search(r"END (SOLUTION|HIDDEN TESTS)", line):
                inside = False
            elif inside and len(line.strip()) >= 20 and line.strip() not in handed_out:
                found.append(line.strip())  # long enough to be specific to the solution
    return found


# --------------------------------------------------------------------------- on disk
def test_site_has_the_student_labs_and_no_solutions(site: Path) -> None:
    pages = {p.relative_to(site).as_posix(): p for p in site.rglob("*") if p.is_file()}
    for lab in LABS:
        assert f"labs/{lab}/{lab}.html" in pages, f"the student version of {lab} is not on the site"
    assert not [name for name in pages if name.startswith("solutions/")], "solutions/ was built into the site"
    texts = {name: p.read_text(errors="replace") for name, p in pages.items()
             if p.suffix in (".html", ".js", ".ipynb", ".txt", ".json")}
    for name, text in texts.items():
        for marker in MARKERS:
            assert marker not in text, f"{name} contains {marker!r}"
    for lab in LABS:
        secret = instructor_only_lines(lab)
        assert secret, f"found no solution code in solutions/{lab} to look for"
        shown = page_text(pages[f"labs/{lab}/{lab}.html"])
        leaked = [line for line in secret if line in shown]
        assert not leaked, f"labs/{lab}/{lab}.html shows solution code: {leaked[:5]}"
    # The labs are shown as handed out: never executed, so no outputs (and no training) on their pages.
    lab_page = pages[f"labs/{LABS[0]}/{LABS[0]}.html"].read_text()
    assert 'class="cell_output' not in lab_page, "a lab was executed by the build"


def test_build_fails_on_a_solution_marker(tmp_path: Path) -> None:
    """The build's own guard (book/_ext/static_site.py): a page with a solution marker fails it."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(BOOK / "_config.yml", source / "_config.yml")
    shutil.copytree(BOOK / "_ext", source / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (source / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (source / "intro.md").write_text("# A leaked solution\n\n```python\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n```\n")
    result = build_book(source, None, tmp_path / "out")
    assert result.returncode != 0, "the build accepted a page with a solution marker"
    assert "solution or hidden-test markers" in result.stdout + result.stderr, result.stdout[-3000:]


def test_lecture_slides_are_on_disk_and_offline(site: Path) -> None:
    """Each lecture's slides sit next to its page, linked from it, with reveal.js in _static/."""
    assert (site / "_static" / "revealjs" / "dist" / "reveal.js").exists(), "reveal.js was not copied into _static/"
    for name in REDUCED_LECTURES:
        slides = site / "course" / f"{name}.slides.html"
        assert slides.exists(), f"no slides for {name}"
        page = (site / "course" / f"{name}.html").read_text()
        assert f'href="{name}.slides.html"' in page, f"{name}.html has no Slides link"
        text = slides.read_text()
        remote = re.findall(r"""(?:src|href)=["'](?:https?:)?//[^"']+""", text)
        assert not remote, f"{slides.name} loads from the network: {remote[:5]}"
        # Built from the executed notebook: its figures are in the slides (as data: URIs).
        assert text.count('src="data:image/png') >= 2, f"{slides.name} has no figures: not the executed notebook?"
        assert "application/vnd.jupyter.widget" not in text, f"{slides.name} still needs the widget manager"


def test_lecture_videos_are_embedded_within_the_budget(site: Path) -> None:
    """Lecture 5's robot videos are in its page as data: URIs (no file to copy, so they play from
    file:// and over http alike), H.264 in MP4, each within the README's budget per video."""
    import base64

    from rlcourse.video import VIDEO_BUDGET_BYTES

    page = (site / "course" / "05_massively_parallel_simulation.html").read_text()
    videos = re.findall(r'<video src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(videos) >= 2, "lecture 5 should show the Quadruped batch and the Ant before/after training"
    sizes = [len(base64.b64decode(v)) for v in videos]
    assert max(sizes) <= VIDEO_BUDGET_BYTES, f"videos of {sizes} bytes; the budget is {VIDEO_BUDGET_BYTES:,}"
    assert all(base64.b64decode(v)[4:8] == b"ftyp" for v in videos), "not MP4 files"


# --------------------------------------------------------------------------- in the browser
@pytest.fixture(scope="module")
def http_site(site: Path) -> Iterator[str]:
    """The site served by ``python -m http.server`` on a free localhost port; stopped at the end."""
    from rlcourse.runner import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/index.html", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None and time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


# Images in a page's cell outputs that the browser actually decoded.
LOADED_IMAGES_JS = """
(selector) => [...document.querySelectorAll(selector)]
  .filter(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)
  .map(img => img.getAttribute('src'))
"""


def has_loaded_plot(page) -> None:
    """A matplotlib figure in a cell output is an <img> that loaded (naturalWidth > 0)."""
    page.wait_for_function(f"() => ({LOADED_IMAGES_JS})('.cell_output img').length > 0")


def has_static_interact_plot(page) -> None:
    """An ipywidgets interact is drawn from its saved state: caption and the figure it showed."""
    page.locator(".rlcourse-widget-caption").first.wait_for(state="attached")
    page.wait_for_function(f"() => ({LOADED_IMAGES_JS})('.rlcourse-static-widget img').length > 0")


def has_typeset_math(page) -> None:
    """MathJax (the local copy) turned the lecture's LaTeX into SVG."""
    page.locator("mjx-container svg").first.wait_for(state="attached")


# Every <video> in a page's cell outputs: decoded (a frame, a size, a duration), no error.
VIDEOS_READY_JS = """
() => { const videos = [...document.querySelectorAll('.cell_output video')];
  return videos.length > 0 && videos.every(v => !v.error && v.readyState >= 2 && v.videoWidth > 0 && v.duration > 0); }
"""


def has_playable_video(page) -> None:
    """The lecture's robot videos play: each <video> decodes, and once played (browsers pause
    muted autoplay off screen) its time advances."""
    page.wait_for_function(VIDEOS_READY_JS)
    videos = page.locator(".cell_output video")
    for i in range(videos.count()):
        plays(videos.nth(i))


# What each lecture page of the reduced site must show.
LECTURE_CHECKS: dict[str, list[Callable]] = {
    "01_rl_loop_and_mdps": [has_loaded_plot, has_static_interact_plot, has_typeset_math],
    "05_massively_parallel_simulation": [has_loaded_plot, has_playable_video],
}


def check_slides(page, base: str, name: str) -> None:
    """Present lecture ``name`` like a lecturer: its page's Slides link, then the arrow key.

    The reveal.js deck renders, has at least 8 slides, moves to the next slide on ArrowRight,
    and has a slide whose figure is visible (an <img> that loaded) and typeset math.
    """
    page.goto(f"{base}/course/{name}.html")
    page.locator(".rlcourse-slides-link a", has_text="Slides").click()
    page.wait_for_url(re.compile(rf"{re.escape(name)}\.slides\.html"))
    page.wait_for_function("() => window.Reveal && Reveal.isReady && Reveal.isReady()")
    total = page.evaluate("Reveal.getTotalSlides()")
    assert total >= 8, f"{name}: only {total} slides"
    assert page.evaluate("Reveal.getIndices().h") == 0
    page.locator(".reveal .slides > section.present").first.wait_for(state="visible")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => Reveal.getIndices().h === 1")
    assert page.locator(".reveal .slides section.present:not(.stack) h2").first.is_visible()
    # Go to the first slide with a figure in a cell output, as the presenter would: it shows.
    where = page.evaluate("""() => {
        const img = document.querySelector('.reveal .slides section .jp-OutputArea-output img');
        return img ? Reveal.getIndices(img.closest('section')) : null; }""")
    assert where is not None, f"{name}: no figure in the slides"
    page.evaluate("([h, v]) => Reveal.slide(h, v)", [where["h"], where.get("v") or 0])
    figure = page.locator(".reveal section.present:not(.stack) .jp-OutputArea-output img").first
    figure.wait_for(state="visible")
    assert figure.evaluate("img => img.complete && img.naturalWidth > 0"), "the slide's figure did not load"
    box = figure.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, f"the figure is not on screen: {box}"
    page.locator(".reveal mjx-container svg").first.wait_for(state="attached")  # math typeset offline


def check_site(page, base: str) -> None:
    """Landing page, lecture pages, search: the same checks from http:// and from file://."""
    page.goto(f"{base}/index.html")  # a redirect to the syllabus
    page.wait_for_url(re.compile(r"course/00_syllabus\.html$"))
    heading = page.locator("article h1").first.inner_text()
    assert "Syllabus" in heading, heading
    assert page.locator("article a[href$='01_rl_loop_and_mdps.html']").count() >= 1, "no link to lecture 1"

    for name, checks in LECTURE_CHECKS.items():
        page.goto(f"{base}/course/{name}.html")
        for check in checks:
            check(page)

    # Search like a reader: the Search button opens the box, type a word, Enter, lecture 1 is a hit.
    page.locator("button.search-button__button:visible").first.click()
    box = page.locator("#pst-search-dialog input[type='search']")
    box.fill("Bellman")
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q=Bellman"))
    hit = page.locator("#search-results a[href*='01_rl_loop_and_mdps']").first
    hit.wait_for(state="attached")

    for name in LECTURE_CHECKS:
        check_slides(page, base, name)


def test_site_in_chromium(site: Path, http_site: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def local_only(route) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:", "blob:", "http://127.0.0.1:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
        try:
            for base in (http_site, site.as_uri()):
                context = browser.new_context(viewport={"width": 1300, "height": 900})
                context.route("**/*", local_only)
                page = context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                try:
                    check_site(page, base)
                except Exception:
                    page.screenshot(path=str(tmp_path / "FAILED_book.png"))
                    raise
                finally:
                    context.close()
                assert not errors, f"JavaScript errors on {base}: {errors}"
        finally:
            browser.close()
    assert not blocked, f"the site asked for non-local resources: {sorted(set(blocked))}"


# --------------------------------------------------------------------------- RISE in JupyterLab
# The current view of RISE's deck (not a stack of vertical slides): its first heading, and
# its figures that loaded and are on screen.
RISE_VIEW_JS = """
() => {
  const view = [...document.querySelectorAll('.reveal .slides section.present')]
                 .filter(s => !s.classList.contains('stack')).pop();
  if (!view) return null;
  const heading = view.querySelector('h1, h2, h3');
  const shown = [...view.querySelectorAll('.jp-OutputArea-output img')].filter(img => {
    const box = img.getBoundingClientRect();
    return img.complete && img.naturalWidth > 0 && box.width > 100 && box.height > 100; });
  return {hash: location.hash, heading: heading ? heading.textContent : '', figures: shown.length,
          images: view.querySelectorAll('.jp-OutputArea-output img').length,
          views: document.querySelectorAll('.reveal .slides section:not(.stack)').length};
}
"""


@pytest.mark.timeout(900)
def test_lecture_as_rise_slideshow_in_jupyterlab(site: Path, tmp_path: Path) -> None:
    """A lecturer presents lecture 1 with RISE: the executed notebook (the one the site build
    wrote, with its figures), "Render as Reveal Slideshow" on the notebook toolbar, then the keys."""
    from playwright.sync_api import sync_playwright

    import nbformat
    from jupyter_cache import get_cache

    name = REDUCED_LECTURES[0]
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir(), home.mkdir()
    # The lecture with the outputs the site build's execution cached: a run-and-saved notebook.
    lecture = nbformat.read(BOOK / "course" / f"{name}.ipynb", as_version=4)
    _, executed = get_cache(str(site.parent / ".jupyter_cache")).merge_match_into_notebook(lecture, cell_meta=())
    nbformat.write(executed, root / f"{name}.ipynb")
    blocked: list[str] = []
    started = time.monotonic()
    with running_jupyter_lab(root, home) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")) else (blocked.append(route.request.url), route.abort()))
        page = context.new_page()
        page.set_default_timeout(180_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{lab.url}/lab/tree/{name}.ipynb?token={lab.token}", wait_until="domcontentloaded")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="visible")
            page.locator(".jp-NotebookPanel-toolbar [data-command='RISE:preview']").first.click()
            deck = page.frame_locator("iframe[src*='/rise/']")
            deck.locator(".reveal .slides section.present").first.wait_for(state="visible")
            frame = next(f for f in page.frames if "/rise/" in f.url)
            frame.wait_for_function(f"() => ({RISE_VIEW_JS})() && ({RISE_VIEW_JS})().heading.includes('Lecture 1')")
            first = frame.evaluate(RISE_VIEW_JS)
            assert first["views"] >= 8, f"RISE shows only {first['views']} views: {first}"

            deck.locator(".reveal").first.click()          # the slideshow has the keyboard
            page.keyboard.press("ArrowRight")              # next slide: section 1
            frame.wait_for_function(f"() => ({RISE_VIEW_JS})().heading.startsWith('1.')")
            seen = [frame.evaluate(RISE_VIEW_JS)]
            while not seen[-1]["figures"] and len(seen) < first["views"]:
                page.keyboard.press("Space")               # next view, down into subslides first
                frame.wait_for_function("h => location.hash !== h", arg=seen[-1]["hash"])
                if frame.evaluate(RISE_VIEW_JS)["images"]:  # a figure on this view: it must show
                    frame.wait_for_function(f"() => ({RISE_VIEW_JS})().figures > 0")
                seen.append(frame.evaluate(RISE_VIEW_JS))
            page.screenshot(path=str(tmp_path / "rise.png"))
        except Exception:
            page.screenshot(path=str(tmp_path / "FAILED_rise.png"))
            print(f"jupyter lab log (end):\n{lab.log()}")
            raise
        finally:
            browser.close()
    print(f"RISE: {time.monotonic() - started:.1f} s; views passed: {[v['hash'] for v in seen]}")
    assert seen[-1]["figures"], f"no figure shown on any RISE view: {seen}"
    assert not errors, f"JavaScript errors in JupyterLab: {errors}"
    assert not blocked, f"RISE asked for non-local resources: {sorted(set(blocked))}"
