"""Same seed -> bit-identical training; another seed -> a different run."""

from __future__ import annotations

import copy

import pytest
import torch

from rlcourse.algos import PPO


def _params(agent: PPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.actor_critic.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_same_losses_and_parameters(tiny_ppo, iterate, env_id: str) -> None:
    runs = []
    for seed in (0, 0, 1):
        agent = tiny_ppo(env_id, seed=seed, num_envs=2)
        init = _params(agent)
        losses = iterate(agent, agent.env, 3)
        runs.append((init, losses, _params(agent), agent.obs_normalizer.mean.clone()))

    (init_a, losses_a, final_a, norm_a), (init_b, losses_b, final_b, norm_b), (init_c, losses_c, final_c, _) = runs
    assert _same(init_a, init_b)
    assert losses_a == losses_b  # every loss of every update, exactly
    assert _same(final_a, final_b)
    assert torch.equal(norm_a, norm_b)
    # A different seed changes the initial weights, the data and therefore the losses.
    assert not _same(init_a, init_c)
    assert losses_a[0]["losses/value_loss"] != losses_c[0]["losses/value_loss"]
    assert not _same(final_a, final_c)


def test_learn_is_deterministic(tiny_ppo) -> None:
    """The same through the Runner that `agent.learn` uses."""
    finals = []
    for seed in (3, 3, 4):
        agent = tiny_ppo("CartPole-v1", seed=seed, num_envs=2)
        agent.learn(3 * 16 * 2, eval_episodes=0, progress=False)
        assert agent.global_step == 96 and agent.iteration == 3
        finals.append(_params(agent))
    assert _same(finals[0], finals[1])
    assert not _same(finals[0], finals[2])


def test_stochastic_predict_follows_the_seed(tiny_ppo) -> None:
    obs = torch.zeros(8, 4)
    a = tiny_ppo("CartPole-v1", seed=5).predict(obs, deterministic=False)
    b = tiny_ppo("CartPole-v1", seed=5).predict(obs, deterministic=False)
    assert torch.equal(a, b)
    many = torch.zeros(64, 4)
    assert not torch.equal(tiny_ppo("CartPole-v1", seed=5).predict(many, deterministic=False),
                           tiny_ppo("CartPole-v1", seed=6).predict(many, deterministic=False))


@pytest.mark.parametrize("algo, env_id", [("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1"), ("ddpg", "Pendulum-v1"),
                                           ("dqn", "CartPole-v1")])
def test_stochastic_predict_leaves_the_agent_as_it_was(algo: str, env_id: str) -> None:
    # predict(deterministic=False) runs the behaviour policy (act), which in training also
    # updates the observation normalizer and remembers the step; sampling must not.
    import rlcourse
    from rlcourse.algos import get_algorithm

    env = rlcourse.envs.make(env_id, num_envs=2, seed=0)
    warm_up = {} if algo == "ppo" else {"learning_starts": 0}       # sample the policy, not the warm-up
    agent = get_algorithm(algo)(env, seed=0, normalize_observations=True, **warm_up)
    before = copy.deepcopy(agent.obs_normalizer.state_dict())
    attributes = dict(vars(agent))
    obs = torch.randn(8, env.single_observation_space.shape[0]) * 3
    samples = [agent.predict(obs, deterministic=False) for _ in range(3)]
    after = agent.obs_normalizer.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert float(after["count"]) == 0.0
    assert vars(agent).keys() == attributes.keys()
    assert all(vars(agent)[k] is v for k, v in attributes.items())
    assert not torch.equal(samples[0], samples[1]) or not torch.equal(samples[1], samples[2])  # still random
    env.close()


# ------------------------------------------------------------------ denormal floats
def _denormal_count(tensors: list[torch.Tensor]) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_denormals_flushed_restores_the_previous_mode() -> None:
    from rlcourse.runner import denormals_flushed, flushing_denormals

    assert not flushing_denormals()
    with denormals_flushed():
        assert flushing_denormals()
        assert float(torch.tensor([1e-20]) * 1e-20) == 0.0     # a result of 1e-40 is flushed
    assert not flushing_denormals() and float(torch.tensor([1e-20]) * 1e-20) > 0.0
    with denormals_flushed(enabled=False):
        assert not flushing_denormals()
    torch.set_flush_denormal(True)          # a caller who had it on keeps it on
    try:
        with denormals_flushed():
            pass
        assert flushing_denormals()
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_flushing_denormals_changes_no_learned_parameter() -> None:
    """DQN's CartPole preset builds up denormal Adam moments within a few thousand steps; the
    runner flushes them (see ``denormals_flushed``), which must not change what is learned."""
    import rlcourse
    from rlcourse.algos import DQN
    from rlcourse.runner import Runner, flushing_denormals

    runs = {}
    for flush in (False, True):
        env = rlcourse.envs.make("CartPole-v1", num_envs=4, seed=0)
        agent = DQN(env, seed=0)
        modes: list[bool] = []
        Runner(agent, env, eval_episodes=0, progress=False, flush_denormals=flush,
               callback=lambda runner: modes.append(flushing_denormals())).learn(3072)
        moments = [s[k] for s in agent.optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
        runs[flush] = ([p.detach().clone() for p in agent.q_network.parameters()], _denormal_count(moments), modes)
        env.close()
    assert not flushing_denormals()                         # restored after learn()
    (params_off, denormals_off, modes_off), (params_on, denormals_on, modes_on) = runs[False], runs[True]
    assert set(modes_off) == {False} and set(modes_on) == {True}
    assert denormals_off > 1000, "the unflushed run should hold many denormal Adam moments"
    assert denormals_on == 0
    assert _same(params_off, params_on)
