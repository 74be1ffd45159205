# rlcourse: every target sets itself up on a fresh machine (creates .venv, installs the package).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned to the CPU wheel here; pyproject keeps it loose for GPU users.
TORCH_SPEC ?= torch==2.13.0
ENV ?= Ant
ALGO ?= ppo
PYTEST_ARGS ?=

.PHONY: help setup train test test-fast lab grade pin labs bench clean

help:
	@echo "make train      train $(ALGO) on the default task ($(ENV)) into runs/"
	@echo "make test       all tests (unit, learning, notebooks, nbgrader round trips)"
	@echo "make test-fast  the quick unit tests only"
	@echo "make lab        JupyterLab on course/"
	@echo "make grade      instructor pipeline: generate, autograde, feedback, grades.csv"
	@echo "make pin        regenerate autograder/pinned_metrics.json from the solutions"
	@echo "make labs       regenerate the student notebooks in labs/ from solutions/"

# Offscreen MuJoCo rendering needs Mesa's EGL (or OSMesa); installed once with apt when missing.
SYSDEPS := libegl1 libegl-mesa0 libgl1 libosmesa6

$(STAMP): pyproject.toml
	@if ! ldconfig -p | grep -q 'libEGL.so.1' && command -v apt-get >/dev/null; then \
		echo "installing system packages: $(SYSDEPS)"; \
		$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo) apt-get update -qq && \
		$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo) apt-get install -y -qq $(SYSDEPS) >/dev/null; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/rlcourse train $(ALGO) --env $(ENV) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab course/

grade: $(STAMP)
	$(VENV)/bin/rlcourse grade $(LAB)

pin: $(STAMP)
	$(VENV)/bin/rlcourse pin $(LAB)

labs: $(STAMP)
	$(PY) -m rlcourse.grading.release

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf runs autograder/submitted autograder/autograded autograder/feedback autograder/gradebook.db autograder/grades.csv autograder/.work
