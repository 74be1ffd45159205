"""Lab 2 (PPO) hidden checks (time-out bootstrapping, GAE, clipped surrogate, training), in-process: the reference passes, every wrong implementation a
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

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab2_ppo"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong student code
def boot_from_next_obs(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    # V of the observation step returned: after the same-step reset, the next episode's first one.
    return reference.bootstrap_time_outs(rewards, terminated, time_outs, next_obs, next_obs, value_fn, gamma)


def boot_terminations_too(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    return reference.bootstrap_time_outs(rewards, terminated, terminated | time_outs, next_obs, final_obs,
                                         value_fn, gamma)


def boot_not_done(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    # Bootstraps the reward but leaves the time-out step "not done".
    rewards, _ = reference.bootstrap_time_outs(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma)
    return rewards, terminated.float()


def boot_every_env(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    return rewards + gamma * value_fn(final_obs), (terminated | time_outs).float()


def boot_without_gamma(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    return reference.bootstrap_time_outs(rewards, terminated, time_outs, next_obs, final_obs, value_fn, 1.0)


def boot_discounts_the_reward(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    # gamma * (r + V) instead of r + gamma * V on the cut steps.
    out = rewards.clone()
    out[time_outs] = gamma * (rewards[time_outs] + value_fn(final_obs[time_outs]))
    return out, (terminated | time_outs).float()


def boot_in_place(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    out = reference.bootstrap_time_outs(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma)
    rewards.copy_(out[0])
    return out


def boot_masked_multiply(rewards, terminated, time_outs, next_obs, final_obs, value_fn, gamma):
    """Correct, written another way: the critic on every env, masked by the time-outs."""
    return rewards + gamma * time_outs.float() * value_fn(final_obs), (terminated | time_outs)


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
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("right", [reference.bootstrap_time_outs, boot_masked_multiply])
def test_bootstrap_check_accepts_the_reference(right: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_bootstrap, right, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (boot_from_next_obs, "bootstrapped from next_obs"),
        (boot_terminations_too, "rewards of terminated episodes must stay"),
        (boot_not_done, "must be marked done too"),
        (boot_every_env, "rewards of envs whose episode goes on must stay"),
        (boot_without_gamma, "rewards of time-out steps differ"),
        (boot_discounts_the_reward, "rewards of time-out steps differ"),
        (boot_in_place, "in place"),
        (lambda *args: "not a tuple", "must return a tuple"),
        (lambda r, term, to, *args: (r[:2], (term | to).float()), "must be (N,)"),
    ],
)
def test_bootstrap_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                       tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_bootstrap, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict
    case = checks.bootstrap_cases()[0]
    expected, _ = reference.bootstrap_time_outs(*(case[k] for k in checks.BOOTSTRAP_INPUTS),
                                                checks._linear_critic(case), case["gamma"])
    assert not any(n in verdict for n in _numbers(expected, 3))


def test_bootstrap_cases_tell_the_mistakes_apart() -> None:
    """Every fixed step with episode ends has each role, and V(final_obs) is far from V(next_obs)."""
    for case in checks.bootstrap_cases()[:3]:
        to, term = case["time_outs"], case["terminated"]
        assert to.any() and term.any() and (~(to | term)).any() and not (to & term).any()
        critic = checks._linear_critic(case)
        assert ((critic(case["final_obs"]) - critic(case["next_obs"]))[to | term].abs() > 1.0).all()
        ended = to | term
        assert torch.equal(case["final_obs"][~ended], case["next_obs"][~ended])
    assert not checks.bootstrap_cases()[3]["time_outs"].any()   # a step with nothing to bootstrap
    assert len({c["gamma"] for c in checks.bootstrap_cases()}) >= 3
    fixed = len(checks.bootstrap_cases())
    fresh = checks.bootstrap_cases(5)[fixed:]
    assert len(fresh) == 2 and all(c["time_outs"].any() and c["terminated"].any() for c in fresh)
    assert not torch.equal(fresh[0]["rewards"][:3], checks.bootstrap_cases(6)[fixed]["rewards"][:3])


@pytest.mark.parametrize("mode", MODES)
def test_gae_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_gae, reference.compute_gae, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
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
        (lambda *args: "not a tuple", "must return a tuple"),
        (lambda *args: ("a", "b"), "must be a torch tensor"),
    ],
)
def test_gae_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str, tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_gae, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict
    # The message ends up in the student's feedback: no expected numbers in it.
    case = checks.gae_cases()[0]
    expected, _ = reference.compute_gae(case["rewards"], case["values"], case["dones"], case["last_values"],
                                        case["gamma"], case["lam"])
    assert not any(n in verdict for n in _numbers(expected, 3))


def test_gae_cases_contain_a_termination_and_a_time_out_mid_rollout() -> None:
    case = checks.gae_cases()[0]
    T = case["dones"].shape[0]
    assert case["dones"][1 : T - 1].sum() >= 2
    # The time-out step's reward was bootstrapped the way PPO.process_env_step does it.
    assert case["rewards"][6, 1] != checks.gae_cases()[1]["rewards"][6, 1]
    lams = {c["lam"] for c in checks.gae_cases()}
    assert {0.0, 1.0} <= lams


def test_fresh_cases_depend_on_the_seed() -> None:
    fixed = len(checks.gae_cases())
    a, b = checks.gae_cases(1)[fixed:], checks.gae_cases(2)[fixed:]
    assert a and not torch.equal(a[0]["rewards"].flatten()[:4], b[0]["rewards"].flatten()[:4])
    assert torch.equal(checks.gae_cases(1)[fixed]["rewards"], a[0]["rewards"])  # same seed, same cases


def gae_lookup_table(rewards, values, dones, last_values, gamma, lam):
    """Hard-coded answers for the fixed cases only (what a student could copy from a run of the
    reference): the fresh random cases of a graded run expose it."""
    for case in checks.gae_cases():
        if rewards.shape == case["rewards"].shape and torch.equal(rewards, case["rewards"]) and gamma == case["gamma"]:
            return reference.compute_gae(rewards, values, dones, last_values, gamma, lam)
    return torch.zeros_like(rewards), values.clone()


def test_graded_cases_catch_answers_hard_coded_for_the_fixed_cases(tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_gae, gae_lookup_table, mode="graded", folder=tmp_path)
    assert verdict is not None and "advantages differ" in verdict


@pytest.mark.parametrize("mode", MODES)
def test_surrogate_check_accepts_the_reference(mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_surrogate, reference.clipped_surrogate_loss, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (surrogate_no_clip, "differs from the reference"),
        (surrogate_max, "differs from the reference"),
        (surrogate_wrong_sign, "differs from the reference"),
        (surrogate_detached, "not differentiable"),
        (surrogate_clips_ratio_only, "differs from the reference"),
        (lambda *args: 0.5, "scalar (0-dim) torch tensor"),
    ],
)
def test_surrogate_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                       tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_surrogate, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict


def test_surrogate_cases_hit_both_clip_edges() -> None:
    case = checks.surrogate_cases()[0]
    ratio = torch.exp(case["log_probs"] - case["old_log_probs"])
    eps = case["clip_eps"]
    assert (ratio > 1 + eps).any() and (ratio < 1 - eps).any() and ((ratio - 1).abs() < eps).any()
    assert (case["advantages"] > 0).any() and (case["advantages"] < 0).any()


# --------------------------------------------------------------------------- training
@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy (the agents below really have the pinned config)."""
    return serve_pins(monkeypatch, tmp_path, LAB, dict(PINS), config_dict=None)


def _graded_cell(**hyperparameters: Any) -> dict[str, Any]:
    """What the graded cell leaves behind, without the training: an untrained agent with the
    pinned hyperparameters (unless overridden) and its evaluation."""
    import rlcourse

    env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=0)
    agent = rlcourse.PPO(env, seed=0, **hyperparameters)
    return {"agent": agent, "result": rlcourse.evaluate(agent, env, episodes=20)}


@pytest.mark.parametrize("mode", MODES)
def test_training_check_re_evaluates_the_recorded_policy(pinned: dict[str, Any], mode: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _graded_cell()
    verdict = check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "a")
    assert verdict is not None and "below the pinned pass mark" in verdict
    assert not shows_number(verdict, pinned["threshold"])
    # What the notebook printed does not count: a forged result dict changes nothing.
    ns["result"]["episode_return_mean"] = 500.0
    assert "below the pinned pass mark" in check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "b")
    # The same policy passes a pass mark it reaches (the grader's own evaluation decides).
    serve_pins(monkeypatch, tmp_path / "pins", LAB, {**pinned, "threshold": 1.0}, config_dict=None)
    assert check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "c") is None


def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any], tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_training, _graded_cell(learning_rate=0.5), mode="graded", folder=tmp_path)
    assert verdict is not None and "learning_rate: pinned" in verdict and "rlcourse pin lab2_ppo" in verdict


def test_training_check_refuses_networks_that_do_not_fit(pinned: dict[str, Any], tmp_path: Path) -> None:
    record = checks.record_policy(_graded_cell())
    first = next(iter(record["modules"]))
    record["modules"][first] = {"weight": torch.zeros(3, 3)}
    with pytest.raises(AssertionError, match=f"network '{first}' does not fit"):
        checks.judge_training(record, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained PPO agent"):
        checks.judge_training({"measured": record["measured"], "algo": "dqn", "modules": {}}, seed=1)


def test_pins_record_how_they_were_made() -> None:
    assert len(PINS["reference_seeds"]) >= 3 and 0 in PINS["reference_seeds"]
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    returns = [run["measured"]["return"] for run in PINS["runs"]]
    # The pass mark sits well below the worst reference seed, above a random policy (~22).
    assert 50 < PINS["threshold"] <= 0.5 * min(returns) + 0.5
    assert PINS["agent_config"]["num_steps_per_env"] > 0
    assert {"torch", "gymnasium", "numpy", "python", "cpu"} <= set(PINS["versions"])
