# rlcourse: every target sets itself up on a fresh machine (creates .venv, installs the package).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned here (the course machines resolve it to the local CPU wheel); pyproject keeps
# it loose for GPU users. TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU wheel
# from PyTorch's index on a laptop (PyPI's default Linux build carries CUDA libraries).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
ENV ?= Ant
ALGO ?= ppo
PYTEST_ARGS ?=

.PHONY: help setup train test test-fast lab book slides grade pin labs bench clean

help:
	@echo "make train      train $(ALGO) on the default task ($(ENV)) into runs/"
	@echo "make test       all tests (unit, learning, notebooks, nbgrader round trips)"
	@echo "make test-fast  the quick unit tests only"
	@echo "make lab        JupyterLab on student/ (lectures and labs), the syllabus open"
	@echo "make book       the course site in book/_build/html (lectures executed, cached)"
	@echo "make slides     slide types for lecture cells that have none (new cells)"
	@echo "make grade      instructor pipeline: generate, autograde, feedback, grades.csv"
	@echo "make pin        regenerate autograder/pinned_metrics.json from the solutions"
	@echo "make labs       regenerate labs/ and autograder/examples/ from solutions/ (LAB=...)"

# System packages, installed with apt (sudo only when not root) when missing:
# - Offscreen MuJoCo rendering needs Mesa's EGL (or OSMesa).
# - The browser test (tests/test_browser_lab3.py) drives Debian's chromium through Playwright;
#   Playwright never downloads a browser of its own.
# - Submissions run inside bubblewrap (rlcourse/grading/sandbox.py; setpriv and prlimit come
#   with util-linux, always installed on Debian).
# - The PostgreSQL gradebook test (tests/test_grading_parallel.py) starts a server of its own
#   with initdb and pg_ctl (Debian puts them in /usr/lib/postgresql/<version>/bin).
SYSDEPS := libegl1 libegl-mesa0 libgl1 libosmesa6
BROWSER := chromium
SANDBOX := bubblewrap
POSTGRES := postgresql

.PHONY: sysdeps
sysdeps:
	@missing=""; \
	{ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libEGL.so.1' || missing="$(SYSDEPS)"; \
	command -v $(BROWSER) >/dev/null || missing="$$missing $(BROWSER)"; \
	command -v bwrap >/dev/null || missing="$$missing $(SANDBOX)"; \
	{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || missing="$$missing $(POSTGRES)"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then \
		sudo=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
		echo "installing system packages:$$missing"; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Order-only: checked (cheaply) before every target that needs the venv, without forcing a reinstall.
$(STAMP): pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@# nbdime's git drivers for notebooks (.gitattributes), by absolute path: git runs them without the venv
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config diff.jupyternotebook.command "$(CURDIR)/$(VENV)/bin/git-nbdiffdriver diff"; \
		git config merge.jupyternotebook.driver "$(CURDIR)/$(VENV)/bin/git-nbmergedriver merge %O %A %B %L %P"; \
		git config merge.jupyternotebook.name "jupyter notebook merge driver"; \
	fi
	@touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/rlcourse train $(ALGO) --env $(ENV) $(ARGS)

# Two worker processes, one group of tests each at a time (a file, or one lab's round trip;
# see tests/conftest.py): the long tests are single-threaded, so this uses both cores.
# PYTEST_ARGS="-n 0" runs everything in one process.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=30 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n 2 --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# Students see student/: symlinks to course/ (lectures, syllabus) and labs/ (their notebooks),
# not solutions/. The syllabus opens first, rendered: Markdown opens as a preview in this
# venv's JupyterLab (an app-wide default in overrides.json; "Open With > Editor" still edits).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP)
	@mkdir -p $(dir $(LAB_OVERRIDES))
	@$(PY) -c 'import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); \
		s = json.loads(p.read_text()) if p.exists() else {}; \
		s.setdefault("@jupyterlab/docmanager-extension:plugin", {}).setdefault("defaultViewers", {})["markdown"] = "Markdown Preview"; \
		p.write_text(json.dumps(s, indent=2))' $(LAB_OVERRIDES)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=student $(if $(filter 0,$(shell id -u)),--allow-root) \
		student/course/00_syllabus.md

# The course site (book/_config.yml, book/_toc.yml) -> book/_build/html, opened from disk or
# served. Lectures execute during the build; results are cached in book/_build/.jupyter_cache,
# so a rebuild re-runs only changed lectures. The inline matplotlib backend (not a preset
# MPLBACKEND) makes the figures; progress bars are off (they would be widgets).
book: $(STAMP)
	env -u MPLBACKEND RLCOURSE_NO_PROGRESS=1 $(VENV)/bin/jupyter-book build book/
	@echo "open book/_build/html/index.html, or: $(PY) -m http.server -d book/_build/html"

# Each lecture is also a slideshow: RISE in `make lab` (Alt+R, or the notebook toolbar's
# "Render as Reveal Slideshow"), and reveal.js slides on the site (book/_ext/slides.py). Cells
# added to a lecture need a slide type: this fills in the ones that have none, by the rules in
# rlcourse/teaching/slides.py (hand-chosen types are kept; review the deck after).
slides: $(STAMP)
	$(PY) -m rlcourse.teaching.slides course/[0-9][0-9]_*.ipynb

grade: $(STAMP)
	$(VENV)/bin/rlcourse grade $(LAB)

pin: $(STAMP)
	$(VENV)/bin/rlcourse pin $(LAB)

labs: $(STAMP)
	$(PY) -m rlcourse.grading.release $(LAB)

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# clean keeps autograder/submitted/: it may hold the only copy of the students' submissions.
clean:
	rm -rf runs autograder/autograded autograder/feedback autograder/gradebook.db autograder/grades.csv autograder/summary.csv autograder/.work
