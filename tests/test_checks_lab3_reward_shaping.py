"""Lab 3 (reward shaping on the Ant) hidden checks, in-process: the reference terms pass, every
wrong term a student is likely to write is rejected with a message that names the term and shows
no expected numbers, the helpers the graded cell measures with behave, and the training check
compares with the pinned pass mark. (The full nbgrader round trip of the lab is in
tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import nbformat
import pytest
import torch

from rlcourse.envs.locomotion import ant
from rlcourse.envs.locomotion.shaping import BUILTIN_TERMS, TERM_NAMES, ForwardSpeedMeter, TermRecorder, lab_rewards
from rlcourse.grading import common
from rlcourse.grading import lab3_reward_shaping as checks

from grading_helpers import serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab3_reward_shaping"
NOTEBOOK = REPO / "solutions" / LAB / f"{LAB}.ipynb"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]
GRADED_WEIGHTS = {"forward_velocity": 2.0, "alive_bonus": 0.5, "energy_penalty": -0.05, "orientation_penalty": -0.5,
                  "fall_penalty": -2.0}
# The graded term cells, the check each one's hidden block calls, and the terms it checks.
TERM_CELLS = {
    "test_task_terms": ("check_task_terms", ("forward_velocity", "alive_bonus")),
    "test_cost_terms": ("check_cost_terms", ("energy_penalty", "orientation_penalty")),
    "test_fall_term": ("check_fall_term", ("fall_penalty",)),
}


@pytest.fixture(scope="module")
def batch():
    env, labels = checks.state_batch()
    yield env, labels
    env.close()


def _secrets(batch) -> set[str]:
    """Every reference value on the fixed batch, as the strings a leaking message would contain."""
    env, _ = batch
    out = set()
    for fn in BUILTIN_TERMS.values():
        for v in fn(env).tolist():
            out.add(f"{v:.4f}")
    # 0 and 1 (alive, fall) are no secret; every other reference value is.
    return {s for s in out if s not in ("0.0000", "1.0000", "-0.0000")}


# --------------------------------------------------------------------------- wrong student terms
WRONG = {
    "forward_velocity": [
        ("body frame", lambda env: env.root_lin_vel_b[:, 0], "differs from the reference"),
        ("planar speed", lambda env: env.root_lin_vel_w[:, :2].norm(dim=1), "differs from the reference"),
        ("keepdim", lambda env: env.root_lin_vel_w[:, 0:1], "shape"),
    ],
    "alive_bonus": [
        ("ignores the fall", lambda env: torch.ones(env.num_envs), "differs from the reference"),
        ("bool", lambda env: ~env.terminated, "float tensor"),
        ("ends on time-outs too", lambda env: 1.0 - (env.terminated | env.time_outs).float(), "differs"),
    ],
    "energy_penalty": [
        ("abs outside the sum", lambda env: (env.actions * env.dof_vel * env.dof_vel_scale).sum(dim=1).abs(), "differs"),
        ("no velocity scale", lambda env: (env.actions * env.dof_vel).abs().sum(dim=1), "differs"),
        ("squared", lambda env: (env.actions * env.dof_vel * env.dof_vel_scale).pow(2).sum(dim=1), "differs"),
        ("negated", lambda env: -ant.energy(env), "only the sign differs"),
        ("in place", lambda env: env.actions.abs_().mul(env.dof_vel.abs()).mul(0.2).sum(dim=1), "in place"),
    ],
    "orientation_penalty": [
        ("L1", lambda env: env.projected_gravity_b[:, :2].abs().sum(dim=1), "differs"),
        ("all three components", lambda env: env.projected_gravity_b.pow(2).sum(dim=1), "differs"),
        ("1 - cos", lambda env: 1.0 + env.projected_gravity_b[:, 2], "differs"),
        ("numpy", lambda env: env.projected_gravity_b[:, :2].pow(2).sum(dim=1).numpy(), "torch tensor"),
        ("nan", lambda env: env.projected_gravity_b[:, :2].pow(2).sum(dim=1) / 0.0 * 0.0, "NaN"),
    ],
    "fall_penalty": [
        ("counts time-outs", lambda env: (env.terminated | env.time_outs).float(), "differs"),
        ("bool", lambda env: env.terminated, "float tensor"),
        ("height rule of its own", lambda env: (env.root_pos_w[:, 2] < 0.35).float(), "differs"),
        ("negated", lambda env: -env.terminated.float(), "only the sign differs"),
        ("a number", lambda env: 0.0, "torch tensor"),
    ],
}
CASES = [(name, label, fn, msg) for name, cases in WRONG.items() for label, fn, msg in cases]

# The wrong students of the old nbgrader round trip, as they wrote their solution cells: one
# realistic bug per graded term cell (each barely changes the reward in training).
WRONG_STUDENTS = {
    "test_task_terms": ("alive_bonus", '''
def forward_velocity(env):
    return env.root_lin_vel_w[:, 0]


def alive_bonus(env):
    return torch.ones(env.num_envs)  # bug: also pays on the step on which the robot falls
'''),
    "test_cost_terms": ("energy_penalty", '''
def energy_penalty(env):
    power = env.actions * env.dof_vel * env.dof_vel_scale
    return power.sum(dim=1).abs()  # bug: braking joints cancel working ones


def orientation_penalty(env):
    return env.projected_gravity_b[:, :2].pow(2).sum(dim=1)
'''),
    "test_fall_term": ("fall_penalty", '''
def fall_penalty(env):
    return (env.terminated | env.time_outs).float()  # bug: a time-out is not a fall
'''),
}


# --------------------------------------------------------------------------- term checks
@pytest.mark.parametrize("name", TERM_NAMES)
def test_the_reference_terms_pass(name: str, batch) -> None:
    checks.check_term(name, BUILTIN_TERMS[name], batch)


def test_the_cell_checks_accept_the_reference_terms() -> None:
    checks.check_task_terms(ant.forward_velocity, ant.is_alive)
    checks.check_cost_terms(ant.energy, ant.flat_orientation_l2)
    checks.check_fall_term(ant.is_terminated)


def test_the_cell_checks_accept_the_notebook_solutions() -> None:
    """The solution cells of the source notebook (what example_complete submits) pass their checks."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict[str, Any] = {"torch": torch}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in ("task_terms", "cost_terms", "fall_term"):
            exec(cell.source, ns)  # noqa: S102 (our own notebook)
    for check, names in TERM_CELLS.values():
        getattr(checks, check)(*(ns[n] for n in names))


@pytest.mark.parametrize("name, label, wrong, message", CASES, ids=[f"{n}-{lbl}" for n, lbl, _, _ in CASES])
def test_wrong_terms_are_rejected(name: str, label: str, wrong: Callable, message: str, batch) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_term(name, wrong, batch)
    text = str(info.value)
    assert name in text, "the message must name the term"
    leaked = {s for s in _secrets(batch) if s in text}
    assert not leaked, f"the message shows expected values {leaked}"
    # The batch is restored after a term that wrote into it, so later checks see the same states.
    checks.check_term(name, BUILTIN_TERMS[name], batch)


@pytest.mark.parametrize("cell", sorted(WRONG_STUDENTS))
def test_the_cell_checks_reject_the_round_trip_students(cell: str, batch) -> None:
    wrong_term, source = WRONG_STUDENTS[cell]
    ns: dict[str, Any] = {"torch": torch}
    exec(source, ns)  # noqa: S102
    check, names = TERM_CELLS[cell]
    with pytest.raises(AssertionError, match=f"^{wrong_term} differs from the reference") as info:
        getattr(checks, check)(*(ns[n] for n in names))
    assert not {s for s in _secrets(batch) if s in str(info.value)}


def test_a_term_that_is_not_a_function_is_rejected() -> None:
    with pytest.raises(AssertionError, match="fall_penalty must be a function"):
        checks.check_fall_term(1.0)


def test_the_fixed_batch_covers_the_cases_the_terms_must_handle(batch) -> None:
    env, labels = batch
    assert env.num_envs == len(labels) == checks.BATCH_SIZE
    assert env.terminated.any() and (~env.terminated).any()
    assert env.time_outs.any() and not (env.time_outs & env.terminated).any()
    v = env.root_lin_vel_w[:, 0]
    assert (v > 0.5).any() and (v < -0.5).any()
    # Robots face many directions, so the body-frame velocity differs from the world-frame one.
    assert not torch.allclose(env.root_lin_vel_b[:, 0], v, atol=0.1)
    up = -env.projected_gravity_b[:, 2]
    assert (up > 0.99).any() and (up < -0.99).any() and ((up > 0.2) & (up < 0.9)).any()
    assert (env.actions.abs() == 1.0).any() and (env.actions.abs() < 1.0).any()
    # Joint powers of both signs in one robot: the place of the absolute value matters.
    power = env.actions * env.dof_vel
    assert ((power > 0).any(dim=1) & (power < 0).any(dim=1)).all()
    # The same batch every time (the expected values are recomputed, but the states are fixed).
    env2, labels2 = checks.state_batch()
    assert labels2 == labels and torch.equal(env2._packed, env._packed) and torch.equal(env2.actions, env.actions)
    env2.close()


# --------------------------------------------------------------------------- the helpers the graded cell uses
def test_terms_work_as_rewards_in_the_ant() -> None:
    """The reference terms run inside the env's reward manager and add up as weighted episode sums;
    recording them does not change the reward."""
    import rlcourse

    recorder = TermRecorder(GRADED_WEIGHTS)
    envs = [rlcourse.envs.make("Ant", num_envs=4, seed=0, episode_length=5, nthread=1, rewards=rewards)
            for rewards in (lab_rewards(BUILTIN_TERMS, GRADED_WEIGHTS),
                            lab_rewards(recorder.wrap(BUILTIN_TERMS), GRADED_WEIGHTS))]
    try:
        assert set(envs[0].reward_manager.names) == set(TERM_NAMES)
        for env in envs:
            env.reset()
        total = torch.zeros(4)
        for _ in range(5):
            (_, reward, _, _, extras), (_, recorded_reward, *_) = (env.step(torch.full((4, 8), 0.3)) for env in envs)
            assert torch.equal(reward, recorded_reward)
            total += reward
        ep = extras["episode"]
        sums = sum(ep[f"rew_{n}"] for n in TERM_NAMES)
        assert torch.allclose(sums, total, atol=1e-5)
        assert torch.allclose(ep["rew_alive_bonus"], torch.full((4,), 5 * GRADED_WEIGHTS["alive_bonus"]))
        recorder(None)
        assert set(recorder.history[0]) == set(TERM_NAMES)
        assert math.isclose(recorder.history[0]["alive_bonus"], GRADED_WEIGHTS["alive_bonus"])
    finally:
        for env in envs:
            env.close()


def test_forward_speed_meter_leaves_out_robots_that_restarted() -> None:
    env = SimpleNamespace(step_dt=0.05, root_pos_w=torch.zeros(3, 3), episode_length=torch.tensor([0, 0, 0]))
    runner = SimpleNamespace(algo=SimpleNamespace(num_steps_per_env=16))
    meter = ForwardSpeedMeter(env)
    meter(runner)
    assert meter.speeds == []  # the first call only records where the robots are
    # 16 steps of 0.05 s later: robots 0 and 1 moved 0.8 m and 1.6 m; robot 2 fell and restarted.
    env.root_pos_w = torch.tensor([[0.8, 0.0, 0.5], [1.6, 0.0, 0.5], [9.0, 0.0, 0.5]])
    env.episode_length = torch.tensor([16, 16, 3])
    meter(runner)
    assert meter.speeds == [pytest.approx(1.5)]  # (1 + 2) / 2 m/s


# --------------------------------------------------------------------------- the training check
class _Agent:
    cfg = None


def _namespace(speed: float, iterations: int = 100) -> dict[str, Any]:
    """What the graded cell leaves behind: ``result``, the trained ``agent``, the ``meter``, ``distances``."""
    return {"result": {"forward_speed": speed, "iterations": iterations}, "agent": _Agent(),
            "meter": SimpleNamespace(speeds=[0.1, speed]), "distances": [0.5, 1.5]}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy; the agent's config check sees the pinned config."""
    return serve_pins(monkeypatch, tmp_path, LAB, PINS,
                      config_dict="rlcourse.grading.lab3_reward_shaping.config_dict")


@pytest.mark.parametrize("offset, passes", [(0.0, True), (0.5, True), (-0.001, False), (-0.5, False)])
def test_training_check_compares_with_the_pinned_pass_mark(pinned: dict[str, Any], offset: float,
                                                           passes: bool) -> None:
    ns = _namespace(pinned["threshold"] + offset)
    if passes:
        checks.check_training(ns)
    else:
        with pytest.raises(AssertionError, match="below the pinned pass mark") as info:
            checks.check_training(ns)
        assert not shows_number(str(info.value), pinned["threshold"])


def test_training_check_refuses_nan_and_a_short_run(pinned: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="below the pinned pass mark"):
        checks.check_training(_namespace(float("nan")))
    with pytest.raises(AssertionError, match="fewer PPO iterations"):
        checks.check_training(_namespace(10.0, iterations=99))


def test_training_check_needs_what_the_training_cell_leaves(pinned: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="must leave `result`"):
        checks.check_training({"agent": _Agent()})
    with pytest.raises(AssertionError, match="must leave the trained `agent`"):
        checks.check_training({"result": {"forward_speed": 10.0, "iterations": 100}})


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    edited = {**PINS["agent_config"], "learning_rate": 1.0}
    monkeypatch.setattr("rlcourse.grading.lab3_reward_shaping.config_dict", lambda cfg: edited)
    with pytest.raises(RuntimeError, match=f"learning_rate: pinned .* now 1.0.*rlcourse pin {LAB}"):
        checks.check_training(_namespace(10.0))


def test_measure_reads_the_graded_cell(pinned: dict[str, Any]) -> None:
    measured = checks.measure(_namespace(0.4))
    assert measured == {"forward_speed": 0.4, "iterations": 100, "speeds": [0.1, 0.4],
                        "forward_distance_mean": 1.0, "agent_config": PINS["agent_config"]}
    json.dumps(measured)


def test_pass_mark_is_half_the_worst_seed_and_refuses_a_reference_that_stands() -> None:
    runs = [{"measured": {"forward_speed": v}} for v in (0.5359, 0.3938, 0.5943)]
    mark = checks.pass_mark(runs)
    assert mark["metric"] == "forward_speed" and mark["threshold"] == 0.197
    assert mark["threshold_rule"].startswith("round(0.5 * reference_min, 3) m/s")
    assert mark["reference_values"] == [0.5359, 0.3938, 0.5943]
    with pytest.raises(RuntimeError, match="not pinning"):
        checks.pass_mark(runs + [{"measured": {"forward_speed": 0.01}}])


# --------------------------------------------------------------------------- pins and notebook
def test_pins_record_how_they_were_made() -> None:
    assert PINS["reference_seeds"] == list(checks.PIN_SEEDS) and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    speeds = [run["measured"]["forward_speed"] for run in PINS["runs"]]
    assert PINS["reference_values"] == [round(v, 4) for v in speeds]
    # Half the worst reference seed, clearly above standing still (~0 m/s).
    assert 0.03 <= PINS["threshold"] == round(0.5 * min(speeds), 3)
    assert all(run["measured"]["iterations"] == 100 for run in PINS["runs"])
    assert PINS["agent_config"]["num_steps_per_env"] == 16  # the 16 in the graded cell's TOTAL_STEPS
    assert PINS["protocol"] == common.protocol(NOTEBOOK), f"stale pins: run `rlcourse pin {LAB}`"
    assert "SEED = 0" in PINS["protocol"]["parameters"] and "WEIGHTS = {" in PINS["protocol"]["test_training"]
    assert {"torch", "numpy", "mujoco", "python", "cpu"} <= set(PINS["versions"])


def _cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    return cell


def test_points_table_and_hidden_checks_match_the_cells() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    table = dict(re.findall(r"^\| `(test_\w+)` \| (\d+) \|", nb.cells[0].source, re.M))
    cells = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
             for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert {k: int(v) for k, v in table.items()} == cells
    assert sum(cells.values()) == 10 and set(cells) == {*TERM_CELLS, "test_training"}
    for cell_id, (check, names) in TERM_CELLS.items():
        assert f"_checks.{check}({', '.join(names)})" in _cell(nb, cell_id).source, cell_id
    assert "_checks.check_training(globals())" in _cell(nb, "test_training").source


def test_the_panel_comes_before_the_first_exercise() -> None:
    """Run All in the *student* notebook stops at the first stub; the panel and a plot must come before it
    (tests/test_browser_lab3.py checks the same in a browser)."""
    nb = nbformat.read(REPO / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    first_stub = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "raise NotImplementedError" in c.source)
    assert ids.index("panel") < first_stub and ids.index("helpers") < first_stub
    panel = nb.cells[ids.index("panel")].source
    assert "reward_panel(" in panel and "display(panel)" in panel
    assert "plt.show()" in nb.cells[ids.index("helpers")].source


def test_the_panel_is_live_widgets_with_the_class_the_browser_test_finds() -> None:
    """Built without a preview (no plot drawn, no simulation beyond the two recorded behaviours)."""
    from rlcourse.teaching import reward_panel

    panel = reward_panel.reward_panel(GRADED_WEIGHTS, preview=False)
    assert reward_panel.PANEL_CLASS == "rlcourse-reward-panel" and reward_panel.PANEL_CLASS in panel._dom_classes
    sliders = {w.description: w.value for w in _widgets(panel) if type(w).__name__ == "FloatSlider"}
    assert sliders == GRADED_WEIGHTS
    assert any(type(w).__name__ == "Button" and w.description == "Train" for w in _widgets(panel))


def _widgets(widget: Any) -> list[Any]:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _widgets(child)
    return found
