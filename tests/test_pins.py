"""``rlcourse pin``: the source notebook is run as the reference, and grading refuses pins whose
graded run is no longer the notebook's.

The notebook a pin executes is checked without a kernel; one real pin (lab 2, one seed, ~30 s)
shows that running the notebook reproduces the committed pins.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from rlcourse.grading import common, pins, release

from grading_helpers import copy_course

REPO = Path(__file__).resolve().parents[1]
LABS = release.list_labs(REPO)
PINNED = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())


def _source(lab: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "solutions" / lab / f"{lab}.ipynb", as_version=4)


@pytest.mark.parametrize("lab", LABS)
def test_each_lab_has_checks_and_current_pins(lab: str) -> None:
    module = common.checks_module(lab)
    for name in ("measure", "check_training", "pass_mark", "PIN_SEEDS"):
        assert hasattr(module, name), f"rlcourse/grading/{lab}.py has no {name}"
    assert 0 in module.PIN_SEEDS and len(module.PIN_SEEDS) >= 3
    # The committed pins describe the committed notebook (else: `make pin LAB=...`).
    common.check_pins_current(REPO, [lab])
    entry = PINNED[lab]
    assert [run["seed"] for run in entry["runs"]] == entry["reference_seeds"] == sorted(module.PIN_SEEDS)
    assert entry["agent_config"] and {"cpu", "torch", "mujoco", "python"} <= set(entry["versions"])


@pytest.mark.parametrize("lab", LABS)
def test_the_pinned_notebook_injects_the_seed_and_leaves_out_hidden_tests(lab: str) -> None:
    nb = pins.pin_notebook(_source(lab), lab, seed=7)
    ids = [common.grade_id(c) for c in nb.cells]
    at = ids.index(common.PARAMETERS_CELL)
    assert nb.cells[at + 1].source.endswith("SEED = 7")
    assert nb.cells[at + 1].metadata["tags"] == ["injected-parameters"]
    # Nothing after the graded cell but the measurement.
    assert ids.index(common.TRAINING_CELL) == len(ids) - 2
    assert f"_pin_checks.measure(globals())" in nb.cells[-1].source
    text = "\n".join(c.source for c in nb.cells)
    assert common.HIDDEN_BEGIN not in text and "### BEGIN SOLUTION" in text  # the reference answers stay


def test_protocol_is_the_parameters_and_training_cells_without_hidden_tests() -> None:
    cells = common.protocol(_source("lab2_ppo"))
    assert set(cells) == {"parameters", "test_training"}
    assert cells["parameters"].endswith("SEED = 0")
    assert "HIDDEN" not in cells["test_training"] and "agent.learn(" in cells["test_training"]


def test_grading_refuses_pins_of_another_graded_run(tmp_path: Path, run_cli) -> None:
    course = copy_course(tmp_path)
    source = course / "solutions" / "lab2_ppo" / "lab2_ppo.ipynb"
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if common.grade_id(c) == "test_training")
    cell.source = cell.source.replace("TOTAL_STEPS = 100_000", "TOTAL_STEPS = 50_000")
    nbformat.write(nb, source)
    proc = run_cli(["grade", "lab2_ppo", "--course-dir", str(course)], cwd=course)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "rlcourse pin lab2_ppo" in proc.stderr
    assert "-TOTAL_STEPS = 100_000" in proc.stderr and "+TOTAL_STEPS = 50_000" in proc.stderr
    assert not (course / "autograder" / "gradebook.db").exists()       # nothing was graded


def test_grading_refuses_a_lab_without_pins(tmp_path: Path) -> None:
    course = copy_course(tmp_path)
    path = course / common.PINS_RELPATH
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "lab5_sac"}))
    with pytest.raises(RuntimeError, match="no pins for lab5_sac; run `rlcourse pin lab5_sac`"):
        common.check_pins_current(course, ["lab5_sac"])


def test_agent_config_check_names_the_changed_fields() -> None:
    pinned = {"agent_config": {"learning_rate": 0.001, "gamma": 0.99}}
    common.check_agent_config("lab1_dqn", {"learning_rate": 0.001, "gamma": 0.99}, pinned)
    with pytest.raises(RuntimeError, match=r"learning_rate: pinned 0.001, now 0.5\).*rlcourse pin lab1_dqn"):
        common.check_agent_config("lab1_dqn", {"learning_rate": 0.5, "gamma": 0.99}, pinned)


def test_margin_pass_mark() -> None:
    mark = common.margin_pass_mark([500.0, 118.45, 300.0], "return")
    assert mark["threshold"] == 59.0 and mark["reference_min"] == 118.45
    # Relative to what an untrained agent scores: halfway from -1100 to the worst reference.
    mark = common.margin_pass_mark([-110.0, -161.48], "return", baseline=-1098.83)
    assert mark["threshold"] == round(-1098.83 + 0.5 * (-161.48 + 1098.83))
    assert common.margin_pass_mark([0.3938, 0.5], "speed", digits=3)["threshold"] == 0.197


def test_pin_rejects_an_unknown_lab(run_cli) -> None:
    proc = run_cli(["pin", "lab9_nope"], cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "lab9_nope" in proc.stderr


@pytest.mark.slow
def test_pin_reproduces_the_committed_pins(tmp_path: Path, run_cli) -> None:
    """`rlcourse pin` runs the source notebook: lab 2's seed 0 gives the committed measurement.
    (Seed 0 reaches 500, the maximum, on every CPU the course was pinned on.)"""
    course = copy_course(tmp_path)
    proc = run_cli(["pin", "lab2_ppo", "--seeds", "0", "--workers", "1", "--course-dir", str(course)],
                   cwd=course, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = json.loads((course / common.PINS_RELPATH).read_text())["lab2_ppo"]
    committed = PINNED["lab2_ppo"]
    assert entry["protocol"] == committed["protocol"] and entry["agent_config"] == committed["agent_config"]
    (run,) = entry["runs"]
    assert run["seed"] == 0 and run["measured"] == committed["runs"][0]["measured"]
    assert entry["threshold"] == 250.0  # half of the only seed's 500
