"""Lab 1 (DQN) hidden checks (epsilon-greedy, the TD loss, training), in both modes (in-process as in the instructor's notebook, and
graded: the sandbox half, records reloaded as tensors only, the judge): the reference passes,
every wrong implementation a student is likely to write is rejected with a message that names
the mistake and shows no expected numbers, and the training check re-evaluates the recorded
agent against the pinned pass mark. (The full nbgrader round trip of the lab is in
tests/test_labs_roundtrip.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from rlcourse.algos import dqn as reference
from rlcourse.grading import lab1_dqn as checks
from rlcourse.storage.replay import ReplayBatch

from grading_helpers import MODES, check_verdict, serve_pins, shows_number

REPO = Path(__file__).resolve().parents[1]
LAB = "lab1_dqn"
PINS = json.loads((REPO / "autograder" / "pinned_metrics.json").read_text())[LAB]


# --------------------------------------------------------------------------- wrong student code
def eps_other_actions_only(q, eps, g):
    """An exploring row never re-draws the greedy action, only the other ones."""
    n, num_actions = q.shape
    greedy = q.argmax(1)
    explore = torch.rand(n, generator=g) < eps
    offset = torch.randint(1, num_actions, (n,), generator=g)
    return torch.where(explore, (greedy + offset) % num_actions, greedy)


def eps_global_rng(q, eps, g):
    n, num_actions = q.shape
    explore = torch.rand(n) < eps
    return torch.where(explore, torch.randint(0, num_actions, (n,)), q.argmax(1))


def eps_one_coin_for_the_batch(q, eps, g):
    if torch.rand(1, generator=g).item() < eps:
        return torch.randint(0, q.shape[1], (q.shape[0],), generator=g)
    return q.argmax(1)


def eps_argmin(q, eps, g):
    return reference.epsilon_greedy(-q, eps, g)


def eps_float_actions(q, eps, g):
    return reference.epsilon_greedy(q, eps, g).float()


def eps_explores_with_one_minus_eps(q, eps, g):
    return reference.epsilon_greedy(q, 1.0 - eps, g)


def eps_in_place(q, eps, g):
    actions = reference.epsilon_greedy(q, eps, g)
    q.zero_()
    return actions


def eps_randint_first(q, eps, g):
    """Correct, but draws its random numbers in another order than the reference."""
    n, num_actions = q.shape
    random_actions = torch.randint(0, num_actions, (n,), generator=g)
    explore = torch.rand(n, generator=g) < eps
    return torch.where(explore, random_actions, q.argmax(1))


def eps_multinomial(q, eps, g):
    """Correct: an explicit per-row categorical distribution over the actions."""
    n, num_actions = q.shape
    probs = torch.full((n, num_actions), eps / num_actions)
    probs[torch.arange(n), q.argmax(1)] += 1.0 - eps
    return torch.multinomial(probs, 1, generator=g).squeeze(1)


def _q_sa(batch, q_network):
    return q_network(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)


def _target(batch, q_network, target_network, gamma, double, stop=None):
    """The right TD target, with ``stop`` (default: batch.dones) ending the bootstrap."""
    stop = batch.dones if stop is None else stop
    with torch.no_grad():
        picker = q_network if double else target_network
        best = picker(batch.next_obs).argmax(1, keepdim=True)
        return batch.rewards + gamma * (1 - stop) * target_network(batch.next_obs).gather(1, best).squeeze(1)


def loss_written_out(batch, q_network, target_network, gamma, delta, double):
    """Correct, written another way: indexing with arange, the Huber formula by hand, detach()."""
    b = batch.rewards.shape[0]
    q = q_network(batch.obs)[torch.arange(b), batch.actions]
    next_online = q_network(batch.next_obs).detach()
    next_target = target_network(batch.next_obs).detach()
    best = next_online.argmax(1) if double else next_target.argmax(1)
    y = batch.rewards + gamma * (1.0 - batch.dones) * next_target[torch.arange(b), best]
    x = (q - y).abs()
    return torch.where(x <= delta, 0.5 * x**2, delta * (x - 0.5 * delta)).mean()


def loss_target_with_grad(batch, q_network, target_network, gamma, delta, double):
    """The classic: the target computed with gradient (no torch.no_grad, no detach)."""
    picker = q_network if double else target_network
    best = picker(batch.next_obs).argmax(1, keepdim=True)
    y = batch.rewards + gamma * (1 - batch.dones) * target_network(batch.next_obs).gather(1, best).squeeze(1)
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_online_evaluates_with_grad(batch, q_network, target_network, gamma, delta, double):
    """Double DQN with the online network's max, not detached: gradient through both sides."""
    y = batch.rewards + gamma * (1 - batch.dones) * q_network(batch.next_obs).max(1).values
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_target_carries_online_grad(batch, q_network, target_network, gamma, delta, double):
    """The right value, but the target carries the online network's gradient (a zero built from
    q_network(next_obs) with gradient): only the gradient shows it."""
    next_online = q_network(batch.next_obs)
    y = _target(batch, q_network, target_network, gamma, double) + (next_online - next_online.detach()).sum(1)
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_picks_with_target(batch, q_network, target_network, gamma, delta, double):
    return F.huber_loss(_q_sa(batch, q_network), _target(batch, q_network, target_network, gamma, False), delta=delta)


def loss_evaluates_with_online(batch, q_network, target_network, gamma, delta, double):
    with torch.no_grad():
        y = batch.rewards + gamma * (1 - batch.dones) * q_network(batch.next_obs).max(1).values
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_always_double(batch, q_network, target_network, gamma, delta, double):
    return F.huber_loss(_q_sa(batch, q_network), _target(batch, q_network, target_network, gamma, True), delta=delta)


def loss_q_of_all_actions(batch, q_network, target_network, gamma, delta, double):
    """q[:, actions]: a (B, B) table that broadcasts against the (B,) targets."""
    q = q_network(batch.obs)[:, batch.actions]
    return F.huber_loss(q, _target(batch, q_network, target_network, gamma, double).expand_as(q), delta=delta)


def loss_gather_dim0(batch, q_network, target_network, gamma, delta, double):
    q = q_network(batch.obs).gather(0, batch.actions.unsqueeze(1)).squeeze(1)
    return F.huber_loss(q, _target(batch, q_network, target_network, gamma, double), delta=delta)


def loss_q_of_best_action(batch, q_network, target_network, gamma, delta, double):
    q = q_network(batch.obs).max(1).values
    return F.huber_loss(q, _target(batch, q_network, target_network, gamma, double), delta=delta)


def loss_time_outs_terminal(batch, q_network, target_network, gamma, delta, double):
    ended = torch.maximum(batch.dones, batch.time_outs)
    y = _target(batch, q_network, target_network, gamma, double, stop=ended)
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_ignores_dones(batch, q_network, target_network, gamma, delta, double):
    y = _target(batch, q_network, target_network, gamma, double, stop=torch.zeros_like(batch.dones))
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta)


def loss_mse(batch, q_network, target_network, gamma, delta, double):
    return F.mse_loss(_q_sa(batch, q_network), _target(batch, q_network, target_network, gamma, double))


def loss_half_mse(batch, q_network, target_network, gamma, delta, double):
    return 0.5 * ((_q_sa(batch, q_network) - _target(batch, q_network, target_network, gamma, double)) ** 2).mean()


def loss_sum(batch, q_network, target_network, gamma, delta, double):
    y = _target(batch, q_network, target_network, gamma, double)
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta, reduction="sum")


def loss_smooth_l1(batch, q_network, target_network, gamma, delta, double):
    """smooth_l1_loss ignores delta (its beta defaults to 1)."""
    return F.smooth_l1_loss(_q_sa(batch, q_network), _target(batch, q_network, target_network, gamma, double))


def loss_q_detached(batch, q_network, target_network, gamma, delta, double):
    with torch.no_grad():
        return reference.td_loss(batch, q_network, target_network, gamma, delta, double).requires_grad_()


def loss_unreduced(batch, q_network, target_network, gamma, delta, double):
    y = _target(batch, q_network, target_network, gamma, double)
    return F.huber_loss(_q_sa(batch, q_network), y, delta=delta, reduction="none")


def loss_in_place(batch, q_network, target_network, gamma, delta, double):
    loss = reference.td_loss(batch, q_network, target_network, gamma, delta, double)
    batch.rewards.zero_()
    return loss


def loss_zero(batch, q_network, target_network, gamma, delta, double):
    """Differentiable, with a gradient, and always 0."""
    q = _q_sa(batch, q_network)
    return (q - q.detach()).mean()


def _numbers(values: torch.Tensor, digits: int = 4) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.flatten().tolist()]


# --------------------------------------------------------------------------- epsilon-greedy
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [reference.epsilon_greedy, eps_randint_first, eps_multinomial], ids=lambda f: f.__name__)
def test_epsilon_check_accepts_correct_implementations(fn: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_epsilon_greedy, fn, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (eps_other_actions_only, "the greedy one included"),
        (eps_global_rng, "from the generator argument"),
        (eps_one_coin_for_the_batch, "independently of the other rows"),
        (eps_argmin, "greedy one, argmax"),
        (eps_float_actions, "int64"),
        (eps_explores_with_one_minus_eps, "greedy one, argmax"),
        (eps_in_place, "in place"),
        (lambda q, eps, g: q.argmax(1).numpy(), "must return a torch tensor"),
        (lambda q, eps, g: q.argmax(1, keepdim=True), "shape"),
    ],
)
def test_epsilon_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                     tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_epsilon_greedy, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and message in verdict
    # The message names epsilon values, never the greedy-action frequency the check expects.
    for epsilon in (1.0, 0.3, 0.5):
        assert not shows_number(verdict, 1.0 - epsilon + epsilon / 4)


@pytest.mark.parametrize("mode", MODES)
def test_epsilon_check_leaves_the_global_random_state_alone(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check = checks.check_epsilon_greedy
    assert check_verdict(check, reference.epsilon_greedy, mode=mode, folder=tmp_path / "a") is None
    assert check_verdict(check, eps_global_rng, mode=mode, folder=tmp_path / "b") is not None
    assert torch.equal(torch.rand(3), expected)


def test_fresh_epsilon_cases_depend_on_the_seed() -> None:
    a, b = checks.epsilon_cases(1)[1:], checks.epsilon_cases(2)[1:]
    assert a and not torch.equal(a[0]["q_values"][:4], b[0]["q_values"][:4])
    assert torch.equal(checks.epsilon_cases(1)[1]["q_values"], a[0]["q_values"])  # same seed, same cases


def test_judge_copes_with_garbage_outputs() -> None:
    """Whatever the sandbox recorded, the judge fails with a message, it never crashes."""
    for check in (checks.EPSILON, checks.TD_LOSS):
        case = check.cases(7)[0]
        for outputs in ({}, {"actions": "<Foo>", "modified": None, "parts": "x"},
                        {"actions": [1, 2], "modified": [False]},
                        {"loss": torch.tensor(1.0), "online_grads": "x", "target_grad_norm": float("nan")},
                        {"loss": torch.tensor(1.0), "online_grads": [], "target_grad_norm": 0.0, "modified": []}):
            with pytest.raises(AssertionError):
                check.judge(case, outputs)


# --------------------------------------------------------------------------- TD loss
def _reference_loss(case: dict[str, Any]) -> torch.Tensor:
    batch = ReplayBatch(**{k: case[k] for k in checks.BATCH_FIELDS})
    return reference.td_loss(batch, checks.q_network(case["online"]), checks.q_network(case["target"]),
                             case["gamma"], case["delta"], case["double"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("right", [reference.td_loss, loss_written_out], ids=lambda f: f.__name__)
def test_td_loss_check_accepts_correct_implementations(right: Callable, mode: str, tmp_path: Path) -> None:
    assert check_verdict(checks.check_td_loss, right, mode=mode, folder=tmp_path) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wrong, message",
    [
        (loss_target_with_grad, "gradient flows into the target network"),
        # The value is judged first: this one also evaluates with the online network.
        (loss_online_evaluates_with_grad, "yours evaluates it with the online network"),
        (loss_target_carries_online_grad, "gradient with respect to the online network differs"),
        (loss_picks_with_target, "yours picks it with the target network"),
        (loss_evaluates_with_online, "yours evaluates it with the online network"),
        (loss_always_double, r"with double=False the target is the plain DQN one"),
        (loss_q_of_all_actions, r"is a \(B, B\) table"),
        (loss_gather_dim0, "picks the wrong entries"),
        (loss_q_of_best_action, "not of the best action"),
        (loss_time_outs_terminal, "time-outs are treated as terminal"),
        (loss_ignores_dones, r"terminal transitions \(batch.dones = 1\) bootstrap"),
        (loss_mse, "the squared error, not the Huber loss"),
        (loss_half_mse, "the squared error, not the Huber loss"),
        (loss_sum, "the mean of the Huber loss over the batch, not the sum"),
        (loss_smooth_l1, "turn linear at the delta argument"),
        (loss_q_detached, "not differentiable with respect to the online network"),
        (loss_unreduced, r"scalar \(0-dim\) tensor"),
        (loss_in_place, "modified batch.rewards in place"),
        (loss_zero, "the loss value differs from the reference"),
        (lambda *args: 0.5, "must return a torch tensor"),
    ],
)
def test_td_loss_check_rejects_wrong_implementations(wrong: Callable, message: str, mode: str,
                                                     tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_td_loss, wrong, mode=mode, folder=tmp_path)
    assert verdict is not None and re.search(message, verdict), verdict
    # The message ends up in the student's feedback: no expected loss in it.
    for case in checks.td_cases():
        assert _numbers(_reference_loss(case).detach(), 3)[0] not in verdict


def test_td_cases_tell_the_mistakes_apart() -> None:
    """Every minibatch has every role and both Huber branches; the networks disagree on the best
    next action; each named mistake changes the loss on some fixed case, and every mistake
    differs from every other there (so the judge's name is the right one)."""
    for case in checks.td_cases(5):
        assert case["dones"].any() and case["time_outs"].any() and not (case["dones"] * case["time_outs"]).any()
        assert ((case["dones"] + case["time_outs"]) == 0).any()
        online, target = checks.q_network(case["online"]), checks.q_network(case["target"])
        with torch.no_grad():
            assert (online(case["next_obs"]).argmax(1) != target(case["next_obs"]).argmax(1)).float().mean() > 0.3
    fixed = checks.td_cases()
    assert {c["double"] for c in fixed} == {True, False} and len({c["delta"] for c in fixed}) >= 3
    for name, change, _ in checks.TD_MISTAKES:
        told = []
        for case in fixed:
            online, target = checks.q_network(case["online"]), checks.q_network(case["target"])
            want = checks._td_loss_variant(case, online, target).item()
            told.append(abs(checks._td_loss_variant(case, online, target, **change).item() - want) > 1e-3 * abs(want))
        assert any(told), name
    case = fixed[0]
    online, target = checks.q_network(case["online"]), checks.q_network(case["target"])
    values = [round(checks._td_loss_variant(case, online, target, **ch).item(), 4) for name, ch, _ in checks.TD_MISTAKES
              if name not in ("ignores_double_flag", "huber_ignores_delta")]  # the reference on this case
    assert len(set(values)) == len(values)
    fresh = checks.td_cases(5)[len(fixed):]
    assert len(fresh) == 2 and {c["double"] for c in fresh} == {True, False}
    assert not torch.equal(fresh[0]["rewards"][:3], checks.td_cases(6)[len(fixed)]["rewards"][:3])


def test_td_loss_check_gives_the_target_network_parameters_that_require_grad() -> None:
    """In DQN the target network never requires grad, so the check must give it some for a
    target built with gradient to show; the judge refuses a loss with target gradients."""
    case = checks.td_cases()[0]
    outputs = checks.call_td_loss(case, loss_target_with_grad)
    assert outputs["target_grad_norm"] > 0
    assert checks.call_td_loss(case, reference.td_loss)["target_grad_norm"] == 0.0


def loss_lookup_table(batch, q_network, target_network, gamma, delta, double):
    """Right on the fixed cases only (what a student could hard-code from a run of the
    reference): the fresh random cases of a graded run expose it."""
    if any(batch.rewards.shape == case["rewards"].shape and torch.equal(batch.rewards, case["rewards"])
           for case in checks.td_cases()):
        return reference.td_loss(batch, q_network, target_network, gamma, delta, double)
    return loss_mse(batch, q_network, target_network, gamma, delta, double)


def test_graded_cases_catch_answers_hard_coded_for_the_fixed_cases(tmp_path: Path) -> None:
    verdict = check_verdict(checks.check_td_loss, loss_lookup_table, mode="graded", folder=tmp_path)
    assert verdict is not None and "not the Huber loss" in verdict


# --------------------------------------------------------------------------- training check and pins
@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The lab's pins, served from a copy (the agents below really have the pinned config)."""
    return serve_pins(monkeypatch, tmp_path, LAB, dict(PINS), config_dict=None)


def _graded_cell(**overrides: Any) -> dict[str, Any]:
    """What the graded cell leaves behind, without the training: an untrained DQN with the graded
    cell's hyperparameters (unless overridden) and the student's functions, and its evaluation."""
    import rlcourse

    hyperparameters = {"hidden": (64, 64), "batch_size": 128, "learning_rate": 1e-3, **overrides}
    env = rlcourse.envs.make("CartPole-v1", num_envs=4, seed=0)
    agent = rlcourse.DQN(env, seed=0, epsilon_fn=eps_multinomial, td_loss_fn=loss_written_out, **hyperparameters)
    eval_env = rlcourse.envs.make("CartPole-v1", num_envs=8, seed=10_000)
    return {"agent": agent, "result": rlcourse.evaluate(agent, eval_env, episodes=20)}


@pytest.mark.parametrize("mode", MODES)
def test_training_check_re_evaluates_the_recorded_agent(pinned: dict[str, Any], mode: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _graded_cell()
    verdict = check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "a")
    assert verdict is not None and "below the pinned pass mark" in verdict
    assert "the two functions above" in verdict
    assert not shows_number(verdict, pinned["threshold"])
    # What the notebook printed does not count: a forged result dict (more return, fewer
    # episodes) changes nothing, the grader evaluates the agent itself.
    ns["result"].update(episode_return_mean=500.0, episodes=3)
    assert "below the pinned pass mark" in check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "b")
    # The same agent passes a pass mark it reaches (the grader's own evaluation decides).
    serve_pins(monkeypatch, tmp_path / "pins", LAB, {**pinned, "threshold": 1.0}, config_dict=None)
    assert check_verdict(checks.check_training, ns, mode=mode, folder=tmp_path / "c") is None


@pytest.mark.parametrize("field, value", [("hidden", (256, 256)), ("batch_size", 64), ("learning_rate", 0.0023)])
def test_training_check_refuses_a_run_with_other_hyperparameters(pinned: dict[str, Any], tmp_path: Path,
                                                                  field: str, value: Any) -> None:
    """The graded cell's own hyperparameters (hidden, batch size, step size) are part of the
    pinned agent config: a cell that drops one of them trains with the preset's value."""
    verdict = check_verdict(checks.check_training, _graded_cell(**{field: value}), mode="graded", folder=tmp_path)
    assert verdict is not None and re.search(f"{field}: pinned .* now .*rlcourse pin lab1_dqn", verdict)


def test_training_check_refuses_networks_that_do_not_fit(pinned: dict[str, Any]) -> None:
    record = checks.record_policy(_graded_cell())
    record["modules"]["q_network"] = {"weight": torch.zeros(3, 3)}
    with pytest.raises(AssertionError, match="network 'q_network' does not fit"):
        checks.judge_training(record, seed=1)
    del record["modules"]["q_network"]
    with pytest.raises(AssertionError, match="network 'q_network' was not recorded"):
        checks.judge_training(record, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained DQN agent"):
        checks.judge_training({"measured": record["measured"], "algo": "ppo", "modules": {}}, seed=1)
    with pytest.raises(AssertionError, match="did not leave a trained DQN agent"):
        checks.judge_training({}, seed=1)


def test_pass_mark_is_half_the_worst_seed_and_refuses_a_reference_that_did_not_learn() -> None:
    runs = [{"seed": s, "measured": {"return": r}} for s, r in enumerate([158.75, 115.7, 175.2])]
    mark = checks.pass_mark(runs)
    assert mark["threshold"] == 58.0 and mark["metric"] == "return" and mark["threshold_rule"]
    assert mark["reference_values"] == [158.75, 115.7, 175.2]
    with pytest.raises(RuntimeError, match="not pinning"):
        checks.pass_mark(runs + [{"seed": 3, "measured": {"return": 40.0}}])


def test_pins_record_how_they_were_made() -> None:
    assert list(PINS["reference_seeds"]) == list(checks.PIN_SEEDS)
    assert [run["seed"] for run in PINS["runs"]] == PINS["reference_seeds"]
    returns = [run["measured"]["return"] for run in PINS["runs"]]
    assert all(run["measured"]["episodes"] == 20 for run in PINS["runs"])
    # The pass mark sits well below the worst reference seed, and above a random policy (~22).
    assert 40 < PINS["threshold"] <= 0.5 * min(returns) + 0.5
    # The graded cell's own hyperparameters are in the pinned config, and so is its protocol.
    config = PINS["agent_config"]
    assert config["hidden"] == [64, 64] and config["batch_size"] == 128 and config["learning_rate"] == 0.001
    assert "SEED = 0" in PINS["protocol"]["parameters"]
    assert "TOTAL_STEPS = 20_000" in PINS["protocol"]["test_training"]
    assert "HIDDEN TESTS" not in PINS["protocol"]["test_training"]
    assert "lab1_dqn.ipynb" in PINS["produced_by"] and PINS["date"]
    assert {"torch", "gymnasium", "numpy", "python", "cpu"} <= set(PINS["versions"])
