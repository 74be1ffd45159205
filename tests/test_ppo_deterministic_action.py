"""PPO's deterministic action, computed by hand (issue 19).

The policy that `rlcourse eval` runs is ``clip(mu(normalize(obs)), low, high)``: the Gaussian's
mean on observations normalized with the *frozen* training statistics, clipped to the action
box the way the env clips sampled actions in training. The network below is set by hand so
``mu`` can be written down: ``mu = k * tanh(tanh(z0)) + b`` with ``z0`` the first normalized
observation.
"""

from __future__ import annotations

import math

import torch

from rlcourse import envs
from rlcourse.algos import PPO
from rlcourse.export import export_torchscript, load_policy


def _hand_set_agent(k: float, b: float) -> PPO:
    env = envs.make("Pendulum-v1", num_envs=1, seed=0)
    agent = PPO(env, seed=0, actor_hidden=(4, 4), critic_hidden=(4,))
    first, second, head = (m for m in agent.actor_critic.actor if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        for layer in (first, second, head):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, 0] = 1.0      # hidden unit 0 = tanh(z0)
        second.weight[0, 0] = 1.0     # hidden unit 0 = tanh(tanh(z0))
        head.weight[0, 0] = k
        head.bias[0] = b
        norm = agent.obs_normalizer
        norm.mean.copy_(torch.tensor([0.5, 0.0, 0.0]))
        norm.var.copy_(torch.tensor([4.0, 1.0, 1.0]))
        norm.count.fill_(100.0)
    return agent


def test_deterministic_action_is_the_clipped_mean_on_frozen_statistics(tmp_path) -> None:
    # obs[0] = 2.5 -> z0 = (2.5 - 0.5) / 2 = 1 -> tanh(tanh(1)) = tanh(0.7615942) = 0.6420150
    t = math.tanh(math.tanh(1.0))
    assert abs(t - 0.6420150) < 1e-6
    obs = torch.tensor([[2.5, 0.0, 0.0], [0.5, 0.3, -0.2], [-1.5, 0.0, 0.0]])

    inside = _hand_set_agent(k=1.0, b=0.3)
    expected = torch.tensor([[0.3 + t], [0.3], [0.3 - t]])
    got = inside.predict(obs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # The same as the mean of the distribution that training samples from.
    with torch.no_grad():
        mean = inside.actor_critic.distribution(inside.obs_normalizer(obs)).mean
    torch.testing.assert_close(got, mean, rtol=0, atol=1e-6)

    # k = 5: the mean leaves Pendulum's torque box [-2, 2] and is clipped like a sampled action.
    outside = _hand_set_agent(k=5.0, b=0.3)
    expected = torch.tensor([[2.0], [0.3], [-2.0]])
    torch.testing.assert_close(outside.predict(obs), expected, rtol=0, atol=1e-6)
    assert 0.3 + 5.0 * t > 2.0 and 0.3 - 5.0 * t < -2.0

    # Evaluation does not update the normalizer, and the exported file acts the same.
    assert outside.obs_normalizer.count.item() == 100.0
    torch.testing.assert_close(outside.obs_normalizer.mean, torch.tensor([0.5, 0.0, 0.0]))
    exported = load_policy(export_torchscript(outside, tmp_path / "policy.pt"))
    torch.testing.assert_close(exported(obs), expected, rtol=0, atol=1e-6)
