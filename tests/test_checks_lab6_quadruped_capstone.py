"""Lab 6 (Quadruped capstone) hidden checks, in both modes (in-process, and graded: the sandbox half
records, the grader judges): the reference terms and the notebook's solutions pass, every wrong
term a student is likely to write is rejected with a message that names it and shows no expected
numbers, and the training check measures the recorded policy on the graded grid against the pass
mark. (The nbgrader round trip of the lab is in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

from rlcourse.envs.locomotion import quadruped as q
from rlcourse.grading import hidden
from rlcourse.grading import lab6_quadruped_capstone as checks

from grading_helpers import MODES, check_verdict, serve_pins

REPO = Path(__file__).resolve().parents[1]
LAB = "lab6_quadruped_capstone"
NOTEBOOK = REPO / "solutions" / LAB / f"{LAB}.ipynb"
GRADED_SEED = 12345
CELLS = {"tracking_terms": checks.check_tracking_terms, "gait_terms": checks.check_gait_terms}
NAMES = {"tracking_terms": ("track_lin_vel_xy", "track_ang_vel_z"),
         "gait_terms": ("foot_slip", "feet_air_time", "joint_limits")}


def _soft_limits(env: Any, soft: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    mid, half = 0.5 * (env.dof_lower + env.dof_upper), 0.5 * soft * (env.dof_upper - env.dof_lower)
    return mid - half, mid + half


WRONG = {
    "track_lin_vel_xy": [
        ("world frame", lambda env, std=0.5: torch.exp(-(env.commands[:, :2] - env.root_lin_vel_w[:, :2]).pow(2).sum(1)
                                                         / std**2)),
        ("std not squared", lambda env, std=0.5: torch.exp(-(env.commands[:, :2] - env.root_lin_vel_b[:, :2])
                                                              .pow(2).sum(1) / std)),
        ("norm, not squared norm", lambda env, std=0.5: torch.exp(-(env.commands[:, :2] - env.root_lin_vel_b[:, :2])
                                                                     .norm(dim=1) / std**2)),
    ],
    "track_ang_vel_z": [
        ("roll rate", lambda env, std=0.5: torch.exp(-(env.commands[:, 2] - env.root_ang_vel_b[:, 0]).pow(2) / std**2)),
        ("all three rates", lambda env, std=0.5: torch.exp(-(env.commands[:, 2:3] - env.root_ang_vel_b).pow(2).sum(1)
                                                              / std**2)),
    ],
    "foot_slip": [
        ("feet in the air too", lambda env: env.feet_lin_vel_w[:, :, :2].pow(2).sum(2).sum(1)),
        ("vertical speed too", lambda env: (env.feet_lin_vel_w.pow(2).sum(2) * env.feet_contact).sum(1)),
        ("speed, not squared", lambda env: (env.feet_lin_vel_w[:, :, :2].norm(dim=2) * env.feet_contact).sum(1)),
    ],
    "feet_air_time": [
        ("not gated by the command", lambda env, threshold=0.4: ((env.feet_last_air_time - threshold)
                                                                  * env.feet_first_contact).sum(1)),
        ("every foot, not touchdowns", lambda env, threshold=0.4: ((env.feet_last_air_time - threshold).sum(1)
                                                                    * (env.commands[:, :2].norm(dim=1) > 0.1))),
        ("gated on the turning rate too", lambda env, threshold=0.4: ((env.feet_last_air_time - threshold)
                                                                       * env.feet_first_contact).sum(1)
         * (env.commands.norm(dim=1) > 0.1)),
    ],
    "joint_limits": [
        ("hard limits", lambda env, soft=0.9: ((env.dof_pos - env.dof_upper).clamp(min=0)
                                               + (env.dof_lower - env.dof_pos).clamp(min=0)).sum(1)),
        ("upper side only", lambda env, soft=0.9: (env.dof_pos - _soft_limits(env, soft)[1]).clamp(min=0).sum(1)),
        ("squared", lambda env, soft=0.9: ((env.dof_pos - _soft_limits(env, soft)[1]).clamp(min=0).pow(2)
                                           + (_soft_limits(env, soft)[0] - env.dof_pos).clamp(min=0).pow(2)).sum(1)),
        ("bool per robot", lambda env, soft=0.9: ((env.dof_pos > _soft_limits(env, soft)[1])
                                                  | (env.dof_pos < _soft_limits(env, soft)[0])).any(dim=1)),
    ],
}
CASES = [(name, label, fn) for name, cases in WRONG.items() for label, fn in cases]


def _cell_of(name: str) -> str:
    return next(cell for cell, names in NAMES.items() if name in names)


def _args(cell: str, replace: dict[str, Any] | None = None) -> list[Any]:
    return [(replace or {}).get(n, checks.TERMS[n]) for n in NAMES[cell]]


@pytest.fixture(scope="module")
def secrets() -> set[str]:
    """Every reference value on the batches both modes use, as a leaking message would print it."""
    out = set()
    for case in [*checks.batch_cases(GRADED_SEED), checks.batch_case(hidden.FIXED_SEED)]:
        env = checks.build_env(case)
        for fn in checks.TERMS.values():
            out |= {f"{v:.4f}" for v in fn(env).tolist()}
        env.close()
    return out - {"0.0000", "1.0000", "-0.0000"}


@pytest.mark.parametrize("mode", MODES)
def test_the_reference_terms_and_the_notebook_solutions_pass(mode: str, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ns: dict[str, Any] = {"torch": torch}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in CELLS:
            exec(cell.source, ns)  # noqa: S102 (our own notebook)
    for cell, entry in CELLS.items():
        assert check_verdict(entry, *_args(cell), mode=mode, folder=tmp_path / f"ref_{cell}") is None
        solution = [ns[n] for n in NAMES[cell]]
        assert check_verdict(entry, *solution, mode=mode, folder=tmp_path / f"nb_{cell}") is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, label, wrong", CASES, ids=[f"{n}-{lbl}" for n, lbl, _ in CASES])
def test_wrong_terms_are_rejected(name: str, label: str, wrong: Any, mode: str, tmp_path: Path,
                                  secrets: set[str]) -> None:
    cell = _cell_of(name)
    verdict = check_verdict(CELLS[cell], *_args(cell, {name: wrong}), mode=mode, folder=tmp_path)
    expected = "float tensor" if label == "bool per robot" else f"{name} differs from the reference"
    assert verdict is not None and expected in verdict, verdict
    assert name in verdict
    assert not {s for s in secrets if s in verdict}, "the message shows expected values"


def test_an_in_place_term_is_reported_and_undone() -> None:
    case = checks.batch_case()
    def in_place(env: Any) -> torch.Tensor:
        return env.feet_last_air_time.sub_(0.4).mul_(env.feet_first_contact).sum(dim=1)
    outputs = checks.GAIT_TERMS.call(case, q.foot_slip, in_place, q.dof_pos_limits)
    assert outputs["feet_air_time"]["modified"] and not outputs["joint_limits"]["modified"]
    with pytest.raises(AssertionError, match="feet_air_time modified the env's state in place"):
        checks.GAIT_TERMS.judge(case, outputs)


def test_the_batches_cover_what_the_terms_must_handle() -> None:
    env = checks.build_env(checks.batch_case())
    try:
        lo, hi = _soft_limits(env)
        assert ((env.dof_pos > hi).any(dim=1)).any() and ((env.dof_pos < lo).any(dim=1)).any()
        assert env.feet_contact.any() and (env.feet_contact == 0).any()
        assert ((env.feet_contact_force > 0) & (env.feet_contact_force < 1)).any()     # touching, not pressed
        standing = env.commands[:, :2].norm(dim=1) <= 0.1
        assert standing.any() and (env.feet_first_contact[standing] > 0).any()          # gated touchdowns
        assert (env.feet_last_air_time[env.feet_first_contact > 0] < 0.4).any()         # short swings cost
        assert not torch.allclose(env.root_lin_vel_b, env.root_lin_vel_w)             # headings and tilts
    finally:
        env.close()


# --------------------------------------------------------------------------- the training check
def _standing_agent() -> Any:
    """A PPO agent whose policy always outputs 0 (the PD servos hold the standing pose)."""
    import rlcourse

    env = rlcourse.envs.make("Quadruped", num_envs=1, seed=0, nthread=1)
    agent = rlcourse.PPO(env, seed=0)
    last = agent.actor_critic.actor[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    env.close()
    return agent


@pytest.mark.parametrize("threshold, passes", [(0.5, True), (0.3, False)])
def test_the_training_check_measures_the_recorded_policy_on_the_grid(threshold: float, passes: bool,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller grid: standing still scores (0.5 + 0.3 + 0.5 * 0.8) / 3 = 0.4 on it.
    monkeypatch.setattr(checks, "GRID_COMMANDS", ((0.5, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, 0.8)))
    monkeypatch.setattr(checks, "GRID_CONDITIONS", {"nominal": {}, "4 kg payload": {"added_mass": 4.0}})
    monkeypatch.setattr(checks, "EPISODE_S", 2.0)
    agent = _standing_agent()
    record = hidden.plain(checks.record_training({"agent": agent}))
    pins = {"agent_config": record["measured"]["agent_config"], "threshold": threshold,
            "runs": [{"measured": {"global_step": 0}}]}
    serve_pins(monkeypatch, tmp_path, LAB, pins, config_dict=None)
    if passes:
        checks.judge_training(record, seed=GRADED_SEED)
    else:
        with pytest.raises(AssertionError, match="tracking error on the graded commands and conditions is above"):
            checks.judge_training(record, seed=GRADED_SEED)
    assert checks.pass_mark([{"measured": {"tracking_error": 0.1}}, {"measured": {"tracking_error": 0.2}}])[
        "threshold"] == pytest.approx(0.3)   # 0.2 + 0.5 * (0.4 - 0.2)


def test_a_reference_that_does_not_beat_standing_still_is_not_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "GRID_COMMANDS", ((0.5, 0.0, 0.0),))
    with pytest.raises(RuntimeError, match="tracks too poorly"):
        checks.pass_mark([{"measured": {"tracking_error": 0.1}}, {"measured": {"tracking_error": 0.45}}])


def test_the_training_check_refuses_a_shorter_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = hidden.plain(checks.record_training({"agent": _standing_agent()}))
    pins = {"agent_config": record["measured"]["agent_config"], "threshold": 1.0,
            "runs": [{"measured": {"global_step": 1000}}]}
    serve_pins(monkeypatch, tmp_path, LAB, pins, config_dict=None)
    with pytest.raises(AssertionError, match="fewer steps"):
        checks.judge_training(record, seed=GRADED_SEED)
