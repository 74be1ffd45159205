"""evaluate_tracking: the capstone's graded measurement of a Quadruped policy."""

from __future__ import annotations

import pytest
import torch

from rlcourse.envs.locomotion.tracking import FALL_ERROR, YAW_LEVER, condition_randomization, evaluate_tracking

COMMANDS = [(0.5, 0.0, 0.0), (0.0, -0.3, 0.0), (0.0, 0.0, 0.8), (0.0, 0.0, 0.0)]
STANDING = torch.tensor([0.5, 0.3, YAW_LEVER * 0.8, 0.0])     # error of a robot that does not move


def test_a_standing_robot_scores_its_commands_and_a_fall_costs_more():
    stand = lambda obs: torch.zeros(obs.shape[0], 12)          # noqa: E731  PD servos hold the home pose
    result = evaluate_tracking(stand, COMMANDS, {"nominal": {}, "heavy": {"added_mass": 3.0}}, episode_s=2.0,
                               settle_s=1.0, nthread=1)
    assert result.errors.shape == (2, 4) and not result.falls.any()
    # (It still sways a little after settling from its random initial pose.)
    torch.testing.assert_close(result.errors, STANDING.expand(2, 4), atol=0.05, rtol=0)
    assert result.error == pytest.approx(float(STANDING.mean()), abs=0.03)
    assert "| heavy |" in result.to_markdown()

    # Hips and knees folded to their limits (targets 2 rad away): the base drops onto the floor
    # within the settling time.
    collapse = lambda obs: torch.tensor([0.0, 1.0, -1.0] * 4).expand(obs.shape[0], 12)   # noqa: E731
    fallen = evaluate_tracking(collapse, COMMANDS, episode_s=2.0, settle_s=1.0, nthread=1,
                               env_kwargs={"action_scale": 2.0})
    assert fallen.falls.all()
    torch.testing.assert_close(fallen.errors[0], STANDING + FALL_ERROR, atol=1e-5, rtol=0)


def test_conditions_become_randomization_configs():
    assert condition_randomization({"friction": 0.4, "added_mass": 2.0, "latency_steps": 1}) == {
        "friction": {"range": [0.4, 0.4]},
        "mass": {"range": [2.0, 2.0], "operation": "additive", "bodies": ["base"]},
        "action_latency": {"range": [1, 1], "mode": "startup"},
    }
    with pytest.raises(ValueError, match="unknown condition 'gravity'"):
        condition_randomization({"gravity": 1.0})
    with pytest.raises(ValueError, match="must be > 0"):
        condition_randomization({"friction": 0.0})
    with pytest.raises(ValueError, match="whole number"):
        condition_randomization({"latency_steps": 0.5})
    with pytest.raises(ValueError, match="NaN"):
        evaluate_tracking(lambda obs: torch.full((obs.shape[0], 12), float("nan")), COMMANDS[:1], episode_s=0.1,
                          settle_s=0.0, nthread=1)
