"""Lab 2 (PPO) hidden checks, in-process: the reference passes, every wrong implementation a
student is likely to write is rejected with a message that names the mistake and shows no
expected numbers, and the training check compares with the pinned pass mark. (The full
nbgrader round trip of the lab is in tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from rlcourse.algos import ppo as reference
from rlcourse.grading import lab2_ppo as checks

from grading_helpers import serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab2_ppo"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong student code
def gae_ignores_lambda(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, dones, last_values, gamma, 1.0)


def gae_hardcoded_lambda(rewards, values, dones, last_values, gamma, lam):
    # lambda hard-coded to the CartPole preset's 0.8 instead of taken from the argument.
    return reference.compute_gae(rewards, values, dones, last_values, gamma, 0.8)


def gae_forgets_gamma(rewards, values, dones, last_values, gamma, lam):
    # lambda instead of gamma * lambda in the recursion.
    return reference.compute_gae(rewards, values, dones, last_values, gamma, lam / gamma)


def gae_no_bootstrap(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, dones, torch.zeros_like(last_values), gamma, lam)


def gae_ignores_dones(rewards, values, dones, last_values, gamma, lam):
    return reference.compute_gae(rewards, values, torch.zeros_like(dones), last_values, gamma, lam)


def gae_returns_without_values(rewards, values, dones, last_values, gamma, lam):
    adv, _ = reference.compute_gae(rewards, values, dones, last_values, gamma, lam)
    return adv, adv


def gae_in_place(rewards, values, dones, last_values, gamma, lam):
    adv, ret = reference.compute_gae(rewards, values, dones, last_values, gamma, lam)
    rewards.mul_(1.0)
    dones.zero_()
    return adv, ret


def surrogate_no_clip(log_probs, old_log_probs, advantages, clip_eps):
    return -(torch.exp(log_probs - old_log_probs) * advantages).mean()


def surrogate_max(log_probs, old_log_probs, advantages, clip_eps):
    ratio = torch.exp(log_probs - old_log_probs)
    return -torch.max(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages).mean()


def surrogate_wrong_sign(log_probs, old_log_probs, advantages, clip_eps):
    return -reference.clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_eps)


def surrogate_detached(log_probs, old_log_probs, advantages, clip_eps):
    return reference.clipped_surrogate_loss(log_probs.detach(), old_log_probs, advantages, clip_eps)


def surrogate_clips_ratio_only(log_probs, old_log_probs, advantages, clip_eps):
    ratio = torch.exp(log_probs - old_log_probs).clamp(1 - clip_eps, 1 + clip_eps)
    return -(ratio * advantages).mean()


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- hidden checks
def test_gae_check_accepts_the_reference() -> None:
    checks.check_gae(reference.compute_gae)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (gae_ignores_lambda, "advantages differ"),
        (gae_forgets_gamma, "advantages differ"),
        (gae_hardcoded_lambda, "advantages differ"),
        (gae_no_bootstrap, "advantages differ"),
        (gae_ignores_dones, "advantages differ"),
        (gae_returns_without_values, "returns differ"),
        (gae_in_place, "in place"),
    ],
)
def test_gae_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message) as info:
        checks.check_gae(wrong)
    # The message ends up in the student's feedback: no expected numbers in it.
    case = checks.gae_cases()[0]
    expected, _ = reference.compute_gae(case["rewards"], case["values"], case["dones"], case["last_values"],
                                        case["gamma"], case["lam"])
    assert not any(n in str(info.value) for n in _numbers(expected, 3))


def test_gae_cases_contain_a_termination_and_a_time_out_mid_rollout() -> None:
    case = checks.gae_cases()[0]
    T = case["dones"].shape[0]
    assert case["dones"][1 : T - 1].sum() >= 2
    # The time-out step's reward was bootstrapped the way PPO.process_env_step does it.
    assert case["rewards"][6, 1] != checks.gae_cases()[1]["rewards"][6, 1]
    lams = {c["lam"] for c in checks.gae_cases()}
    assert {0.0, 1.0} <= lams


def test_surrogate_check_accepts_the_reference() -> None:
    checks.check_surrogate(reference.clipped_surrogate_loss)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (surrogate_no_clip, "differs from the reference"),
        (surrogate_max, "differs from the reference"),
        (surrogate_wrong_sign, "differs from the reference"),
        (surrogate_detached, "not differentiable"),
        (surrogate_clips_ratio_only, "differs from the reference"),
    ],
)
def test_surrogate_check_rejects_wrong_implementations(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.check_surrogate(wrong)


def test_surrogate_cases_hit_both_clip_edges() -> None:
    case = checks.surrogate_cases()[0]
    ratio = torch.exp(case["log_probs"] - case["old_log_probs"])
    eps = case["clip_eps"]
    assert (ratio > 1 + eps).any() and (ratio < 1 - eps).any() and ((ratio - 1).abs() < eps).any()
    assert (case["advantages"] > 0).any() and (case["advantages"] < 0).any()


def _namespace(value: float, episodes: int = 20) -> dict[str, Any]:
    """What the graded cell leaves behind: the evaluation ``result`` and the trained ``agent``."""
    class Agent:
        cfg = None

    return {"result": {"episode_return_mean": value, "episode_return_std": 0.0, "episodes": episodes},
            "agent": Agent()}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy; the agent's config check sees the pinned config."""
    return serve_pins(monkeypatch, tmp_path, LAB, PINS)


@pytest.mark.parametrize("offset, passes", [(0.0, True), (50.0, True), (-1.0, False), (-200.0, False)])
def test_training_check_compares_with_the_pinned_pass_mark(pinned: dict[str, Any], offset: float,
                                                           passes: bool) -> None:
    ns = _namespace(pinned["threshold"] + offset)
    if passes:
        checks.check_training(ns)
    else:
        with pytest.raises(AssertionError, match="below the pinned pass mark") as info:
            checks.check_training(ns)
        assert not shows_number(str(info.value), pinned["threshold"])


def test_training_check_refuses_fewer_evaluation_episodes(pinned: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="fewer episodes"):
        checks.check_training(_namespace(500.0, episodes=5))


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    edited = {**PINS["agent_config"], "learning_rate": 1.0}
    monkeypatch.setattr("rlcourse.grading.common.config_dict", lambda cfg: edited)
    with pytest.raises(RuntimeError, match="learning_rate: pinned .* now 1.0.*rlcourse pin lab2_ppo"):
        checks.check_training(_namespace(500.0))


def test_pins_record_how_they_were_made() -> None:
    assert len(PINS["reference_seeds"]) >= 3 and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    returns = [run["measured"]["return"] for run in PINS["runs"]]
    # The pass mark sits well below the worst reference seed, above a random policy (~22).
    assert 50 < PINS["threshold"] <= 0.5 * min(returns) + 0.5
    assert PINS["agent_config"]["num_steps_per_env"] > 0
    assert {"torch", "gymnasium", "numpy", "python", "cpu"} <= set(PINS["versions"])
