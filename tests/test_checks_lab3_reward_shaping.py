"""Lab 3 (reward shaping on the Ant) hidden checks, in both modes (in-process, as in the
instructor's notebook, and graded: the sandbox half records, the grader judges): the reference
terms pass, every wrong term a student is likely to write is rejected with a message that names
the term and shows no expected numbers, the helpers the graded cell measures with behave, and the
training check re-measures the recorded policy against the pinned pass mark. (The full nbgrader
round trip of the lab is in tests/test_labs_roundtrip.py.)
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
from rlcourse.grading import common, hidden
from rlcourse.grading import lab3_reward_shaping as checks

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab3_reward_shaping"
NOTEBOOK = REPO / "solutions" / LAB / f"{LAB}.ipynb"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]
GRADED_WEIGHTS = {"forward_velocity": 2.0, "alive_bonus": 0.5, "energy_penalty": -0.05, "orientation_penalty": -0.5,
                  "fall_penalty": -2.0}
GRADED_SEED = 12345  # the seed judge.simulate draws the fresh batch from
# The graded term cells, the check each one's hidden block calls, and the terms it checks.
TERM_CELLS = {
    "test_task_terms": ("check_task_terms", ("forward_velocity", "alive_bonus")),
    "test_cost_terms": ("check_cost_terms", ("energy_penalty", "orientation_penalty")),
    "test_fall_term": ("check_fall_term", ("fall_penalty",)),
}


def _cell_call(name: str, fn: Any) -> tuple[Callable[..., None], list[Any]]:
    """The entry point that checks term ``name`` and its arguments: ``fn`` in the term's place,
    the reference terms in the others'."""
    for check, names in TERM_CELLS.values():
        if name in names:
            return getattr(checks, check), [fn if n == name else BUILTIN_TERMS[n] for n in names]
    raise KeyError(name)


def _secrets() -> set[str]:
    """Every reference value on the batches of both modes (the fixed one, one drawn from the
    in-process seed, one from the graded runs' seed), as the strings a leaking message would contain."""
    out = set()
    for case in [*checks.batch_cases(GRADED_SEED), checks.batch_case(hidden.FIXED_SEED)]:
        env = checks.build_env(case)
        for fn in BUILTIN_TERMS.values():
            out |= {f"{v:.4f}" for v in fn(env).tolist()}
        env.close()
    # 0 and 1 (alive, fall) are no secret; every other reference value is.
    return out - {"0.0000", "1.0000", "-0.0000"}


@pytest.fixture(scope="module")
def secrets() -> set[str]:
    return _secrets()


@pytest.fixture(scope="module")
def batch():
    env = checks.build_env(checks.batch_case())
    yield env
    env.close()


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
        ("not a function", 1.0, "must be a function"),
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
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", sorted(TERM_CELLS))
def test_the_cell_checks_accept_the_reference_terms(cell: str, mode: str, tmp_path: Path) -> None:
    check, names = TERM_CELLS[cell]
    assert check_verdict(getattr(checks, check), *(BUILTIN_TERMS[n] for n in names), mode=mode, folder=tmp_path) is None


def test_the_builtin_terms_are_the_ant_module_functions() -> None:
    assert [BUILTIN_TERMS[n] for n in TERM_NAMES] == [ant.forward_velocity, ant.is_alive, ant.energy,
                                                       ant.flat_orientation_l2, ant.is_terminated]


@pytest.mark.parametrize("mode", MODES)
def test_the_cell_checks_accept_the_notebook_solutions(mode: str, tmp_path: Path) -> None:
    """The solution cells of the source notebook (what example_complete submits) pass their checks."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict[str, Any] = {"torch": torch}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in ("task_terms", "cost_terms", "fall_term"):
            exec(cell.source, ns)  # noqa: S102 (our own notebook)
    for check, names in TERM_CELLS.values():
        verdict = check_verdict(getattr(checks, check), *(ns[n] for n in names), mode=mode, folder=tmp_path / check)
        assert verdict is None, verdict


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, label, wrong, message", CASES, ids=[f"{n}-{lbl}" for n, lbl, _, _ in CASES])
def test_wrong_terms_are_rejected(name: str, label: str, wrong: Any, message: str, mode: str, tmp_path: Path,
                                  secrets: set[str]) -> None:
    entry, args = _cell_call(name, wrong)
    verdict = check_verdict(entry, *args, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict, verdict
    assert name in verdict, "the message must name the term"
    leaked = {s for s in secrets if s in verdict}
    assert not leaked, f"the message shows expected values {leaked}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cell", sorted(WRONG_STUDENTS))
def test_the_cell_checks_reject_the_round_trip_students(cell: str, mode: str, tmp_path: Path,
                                                        secrets: set[str]) -> None:
    wrong_term, source = WRONG_STUDENTS[cell]
    ns: dict[str, Any] = {"torch": torch}
    exec(source, ns)  # noqa: S102
    check, names = TERM_CELLS[cell]
    verdict = check_verdict(getattr(checks, check), *(ns[n] for n in names), mode=mode, folder=tmp_path)
    assert verdict is not None and re.match(f"{wrong_term} differs from the reference", verdict), verdict
    assert not {s for s in secrets if s in verdict}


def test_a_term_that_writes_into_the_env_is_undone_before_the_next_one() -> None:
    """The sandbox half restores the states after a term that wrote into them, so the next term
    of the cell sees the batch unchanged."""
    case = checks.batch_case()
    in_place = WRONG["energy_penalty"][-1][1]
    outputs = checks.COST_TERMS.call(case, in_place, BUILTIN_TERMS["orientation_penalty"])
    assert outputs["energy_penalty"]["modified"] and not outputs["orientation_penalty"]["modified"]
    env = checks.build_env(case)
    assert torch.equal(outputs["orientation_penalty"]["out"], ant.flat_orientation_l2(env))
    env.close()


def fall_penalty_lookup_table(env):
    """Right on the fixed batch only (what a student could hard-code from a run of the reference):
    the batch a graded run draws for the submission exposes it."""
    fixed = checks.build_env(checks.batch_case())
    on_fixed = torch.equal(env._packed, fixed._packed)
    fixed.close()
    return env.terminated.float() if on_fixed else torch.zeros(env.num_envs)


@pytest.mark.parametrize("mode", MODES)
def test_terms_right_on_the_fixed_batch_only_are_caught(mode: str, tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_fall_term, fall_penalty_lookup_table, mode=mode, folder=tmp_path)
    assert verdict is not None and "fall_penalty differs from the reference" in verdict
    assert "a batch drawn for this submission" in verdict


@pytest.mark.parametrize("outputs, message", [
    ("garbage", "found no result"),
    ({"fall_penalty": {"callable": True, "is_tensor": True, "type": "Tensor", "out": "<Foo>"}}, "torch tensor"),
    ({"fall_penalty": {"callable": True, "is_tensor": True, "type": "Tensor", "out": torch.zeros(3)}}, "shape"),
    ({"fall_penalty": [1, 2]}, "found no result"),
])
def test_the_judge_fails_clearly_on_outputs_of_any_kind(outputs: Any, message: str) -> None:
    case = checks.batch_case()
    with pytest.raises(AssertionError, match=message):
        checks.FALL_TERM.judge(case, outputs if isinstance(outputs, dict) else {"out": outputs})


def test_the_sandbox_halves_need_no_reference_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """While grading, the functions in WITHHELD raise in the sandbox: the term checks' ``call`` and the
    training check's ``record`` must run without them."""
    def withheld(env: Any) -> torch.Tensor:
        raise RuntimeError("withheld during grading")

    # Every reference term is withheld.
    assert set(checks.WITHHELD["rlcourse.envs.locomotion.ant"]) == {fn.__name__ for fn in BUILTIN_TERMS.values()}
    students = {n: (lambda fn: lambda env: fn(env))(fn) for n, fn in BUILTIN_TERMS.items()}  # the student's copies
    for name in checks.WITHHELD["rlcourse.envs.locomotion.ant"]:
        assert callable(getattr(ant, name))
        monkeypatch.setattr(ant, name, withheld)
    for name in TERM_NAMES:   # the dict the checks were built with (its entries hold the functions themselves)
        monkeypatch.setitem(checks.BUILTIN_TERMS, name, withheld)
    case = checks.batch_case()
    for check, names in TERM_CELLS.values():
        outputs = getattr(checks, check).check.call(case, *(students[n] for n in names))
        assert set(outputs) == set(names)
    checks.record_training(_graded_cell())


def test_the_fixed_batch_covers_the_cases_the_terms_must_handle(batch) -> None:
    env = batch
    labels = checks.batch_case()["labels"]
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
    env2 = checks.build_env(checks.batch_case())
    assert torch.equal(env2._packed, env._packed) and torch.equal(env2.actions, env.actions)
    env2.close()


def test_fresh_batches_depend_on_the_seed_and_hold_falls_and_time_outs() -> None:
    fixed, a = checks.batch_cases(1)
    b = checks.batch_case(2)
    assert fixed["batch"] == "the fixed batch" and a["batch"] == "a batch drawn for this submission"
    assert not torch.equal(a["qpos"], b["qpos"]) and not torch.equal(a["qpos"], fixed["qpos"])
    assert torch.equal(checks.batch_case(1)["qpos"], a["qpos"])  # same seed, same batch
    for case in (a, b):
        assert case["terminated"].any() and case["time_outs"].any()
        assert not (case["terminated"] & case["time_outs"]).any()
    # The cases survive what grading does with them (torch.save, then a tensors-only load).
    env = checks.build_env(a)
    assert torch.equal(env.terminated, a["terminated"]) and torch.equal(env.actions, a["actions"])
    env.close()


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
# A cheaper re-measurement for the tests (the lab's SPEED_CHECK takes seconds): fewer robots and
# windows, still enough that an untrained policy's random flailing averages out well below the mark.
CHEAP_SPEED_CHECK = {"num_envs": 64, "warmup_windows": 2, "windows": 4}


def _graded_cell(speed: float = 0.5, iterations: int = 100, **hyperparameters: Any) -> dict[str, Any]:
    """What the graded cell leaves behind, without the training: an untrained PPO agent on the Ant
    (the pinned hyperparameters unless overridden), ``result``, the ``meter`` and ``distances``."""
    import rlcourse

    env = rlcourse.envs.make("Ant", num_envs=4, seed=0, nthread=1)
    agent = rlcourse.PPO(env, seed=0, **hyperparameters)
    env.close()
    return {"agent": agent, "result": {"forward_speed": speed, "iterations": iterations},
            "meter": SimpleNamespace(speeds=[0.1, speed]), "distances": [0.5, 1.5]}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy; the grader's re-measurement made cheap."""
    monkeypatch.setattr(checks, "SPEED_CHECK", CHEAP_SPEED_CHECK)
    return serve_pins(monkeypatch, tmp_path, LAB, PINS)


def _verdict(ns: dict[str, Any], mode: str, folder: Path) -> str | None:
    """The training check's verdict; a failure of the sandbox half (which stops the cell) as its message."""
    try:
        return check_verdict(checks.check_training, ns, mode=mode, folder=folder)
    except AssertionError as exc:
        return str(exc)


@pytest.mark.parametrize("mode", MODES)
def test_training_check_re_measures_the_recorded_policy(pinned: dict[str, Any], mode: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _graded_cell()
    verdict = _verdict(ns, mode, tmp_path / "a")
    assert verdict is not None and "below the pinned pass mark" in verdict
    assert not shows_number(verdict, pinned["threshold"])
    # What the notebook measured does not count: a forged speed changes nothing.
    ns["result"]["forward_speed"] = 10.0
    assert "below the pinned pass mark" in _verdict(ns, mode, tmp_path / "b")
    # The same policy passes a pass mark it reaches (the grader's own measurement decides).
    monkeypatch.setitem(pinned, "threshold", -10.0)
    serve_pins(monkeypatch, tmp_path / "pins", LAB, pinned)
    assert _verdict(ns, mode, tmp_path / "c") is None


def test_the_re_measurement_depends_on_the_seed_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed, same speed; another seed, other robots and exploration noise."""
    import rlcourse

    monkeypatch.setattr(checks, "SPEED_CHECK", CHEAP_SPEED_CHECK)
    agent = _graded_cell()["agent"]
    speeds = []
    for seed in (1, 1, 2):
        env = rlcourse.envs.make("Ant", num_envs=CHEAP_SPEED_CHECK["num_envs"], seed=seed, nthread=1)
        speeds.append(checks.training_speed(agent, env, seed))
        env.close()
    assert speeds[0] == speeds[1] != speeds[2] and all(math.isfinite(v) for v in speeds)
    assert abs(speeds[0]) < PINS["threshold"]  # an untrained policy does not walk


@pytest.mark.parametrize("mode", MODES)
def test_training_check_refuses_a_short_run(pinned: dict[str, Any], mode: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pinned, "threshold", -10.0)
    serve_pins(monkeypatch, tmp_path / "pins", LAB, pinned)
    assert "fewer PPO iterations" in _verdict(_graded_cell(iterations=99), mode, tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_training_check_needs_what_the_training_cell_leaves(pinned: dict[str, Any], mode: str,
                                                            tmp_path: Path) -> None:
    ns = _graded_cell()
    assert "must leave `result`" in _verdict({"agent": ns["agent"]}, mode, tmp_path / "a")
    assert "must leave the trained `agent`" in _verdict({"result": ns["result"]}, mode, tmp_path / "b")
    assert "an rlcourse PPO agent" in _verdict({**ns, "agent": SimpleNamespace(cfg=None)}, mode, tmp_path / "c")


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any], tmp_path: Path) -> None:
    ns = _graded_cell(learning_rate=0.5)
    verdict = check_verdict(checks.check_training, ns, mode="graded", folder=tmp_path)
    assert verdict is not None and "learning_rate: pinned" in verdict and f"rlcourse pin {LAB}" in verdict
    with pytest.raises(AssertionError, match=f"learning_rate: pinned .* now 0.5.*rlcourse pin {LAB}"):
        checks.check_training(ns)


def test_training_check_refuses_records_that_do_not_fit(pinned: dict[str, Any]) -> None:
    record = checks.record_training(_graded_cell())
    with pytest.raises(AssertionError, match="did not leave a trained PPO agent"):
        checks.judge_training({**record, "algo": "sac"}, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained PPO agent"):
        checks.judge_training({"modules": record["modules"]}, seed=1)
    with pytest.raises(AssertionError, match="network 'obs_normalizer' was not recorded"):
        checks.judge_training({**record, "modules": {"actor_critic": record["modules"]["actor_critic"]}}, seed=1)
    wrong_shape = {**record["modules"], "actor_critic": {"weight": torch.zeros(3, 3)}}
    with pytest.raises(AssertionError, match="network 'actor_critic' does not fit"):
        checks.judge_training({**record, "modules": wrong_shape}, seed=1)
    strings = {**record["modules"], "obs_normalizer": {"mean": "<Foo>"}}
    with pytest.raises(AssertionError, match="network 'obs_normalizer' does not fit"):
        checks.judge_training({**record, "modules": strings}, seed=1)
    with pytest.raises(AssertionError, match="fewer PPO iterations"):
        checks.judge_training({**record, "measured": {**record["measured"], "iterations": "100"}}, seed=1)


def test_measure_reads_the_graded_cell() -> None:
    ns = _graded_cell(0.4)
    measured = checks.measure(ns)
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
