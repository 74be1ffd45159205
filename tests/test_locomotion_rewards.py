"""Reward terms as data: hand-computed term values, sums, zero weights, custom terms."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlcourse.envs import make
from rlcourse.envs.locomotion import RewardTerm
from rlcourse.envs.locomotion import ant as ant_terms
from rlcourse.envs.locomotion.rewards import RewardManager, merge_reward_terms


def actions_seq(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 8, generator=g) * 2 - 1 for _ in range(steps)]


# ----------------------------------------------------------------------------- the term functions
def test_heading_term_by_hand():
    env = SimpleNamespace(heading_proj=torch.tensor([0.9, 0.8, 0.4, -0.8]))
    torch.testing.assert_close(ant_terms.heading(env), torch.tensor([1.0, 1.0, 0.5, -1.0]))


def test_upright_and_joint_limit_terms_by_hand():
    env = SimpleNamespace(up_proj=torch.tensor([1.0, 0.94, 0.93, -1.0]))
    torch.testing.assert_close(ant_terms.upright(env), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    env = SimpleNamespace(dof_pos_scaled=torch.tensor([[0.0, 0.995, -1.0, 0.5], [0.99, 0.2, 0.3, 0.4]]))
    torch.testing.assert_close(ant_terms.joints_at_limit(env), torch.tensor([2.0, 0.0]))


def test_action_and_energy_costs_by_hand():
    env = SimpleNamespace(
        actions=torch.tensor([[1.0, -0.5], [0.0, 0.2]]),
        dof_vel=torch.tensor([[2.0, 4.0], [10.0, -5.0]]),
        dof_vel_scale=0.2,
    )
    torch.testing.assert_close(ant_terms.action_l2(env), torch.tensor([1.25, 0.04]))
    # |1 * 2 * 0.2| + |-0.5 * 4 * 0.2| = 0.8; |0| + |0.2 * -5 * 0.2| = 0.2
    torch.testing.assert_close(ant_terms.energy(env), torch.tensor([0.8, 0.2]))


def test_progress_is_speed_toward_the_target():
    env = make("Ant", num_envs=3, seed=0)
    env.reset()
    for a in actions_seq(3, 5):
        before = env.sim.qpos[:, :2].copy()
        env.step(a)
        after = env.sim.qpos[:, :2]
        target = torch.tensor([1000.0, 0.0], dtype=torch.float64)
        d0 = (target - torch.from_numpy(before)).norm(dim=1)
        d1 = (target - torch.from_numpy(after)).norm(dim=1)
        expected = ((d0 - d1) / 0.05).float()
        got = env.reward_manager.last_values()["progress"]
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)   # float32 potentials ~2e4


# ----------------------------------------------------------------------------- sums and weights
def test_default_terms_and_weights_are_documented_ige_values():
    weights = {name: t.weight for name, t in make("Ant", num_envs=1).reward_terms.items()}
    assert weights == {
        "progress": 1.0, "alive": 0.5, "upright": 0.1, "heading": 0.5,
        "action_l2": -0.005, "energy": -0.05, "joints_at_limit": -0.1, "termination": -2.0,
    }


def test_terms_sum_to_the_reward_every_step_and_episode_sums_to_the_return():
    env = make("Ant", num_envs=8, seed=1, episode_length=40)
    env.reset()
    finished = 0
    for a in actions_seq(8, 80, seed=1):
        obs, rew, term, trunc, extras = env.step(a)
        parts = env.reward_manager.last_values()
        torch.testing.assert_close(sum(parts.values()), rew)
        if "episode" in extras:
            ep = extras["episode"]
            total = sum(v for k, v in ep.items() if k.startswith("rew_"))
            torch.testing.assert_close(total, ep["return"], atol=1e-3, rtol=1e-5)
            finished += len(ep["env_ids"])
    assert finished >= 8


def test_zero_weight_drops_the_term_and_only_that_term():
    acts = actions_seq(4, 30, seed=2)
    full = make("Ant", num_envs=4, seed=0, episode_length=10)          # episodes end: sums get logged
    no_energy = make("Ant", num_envs=4, seed=0, episode_length=10, rewards={"energy": 0.0, "alive": None})
    assert "energy" not in no_energy.reward_terms and "alive" not in no_energy.reward_terms
    full.reset()
    no_energy.reset()
    logged = 0
    for a in acts:
        o1, r1, t1, *_ , e1 = full.step(a)
        o2, r2, t2, *_ , e2 = no_energy.step(a)
        assert torch.equal(o1, o2)                       # rewards never change the physics
        parts = full.reward_manager.last_values()
        torch.testing.assert_close(r1 - r2, parts["energy"] + parts["alive"])
        if "episode" in e2:
            logged += 1
            assert "rew_energy" not in e2["episode"] and "rew_alive" not in e2["episode"]
            assert "rew_progress" in e2["episode"] and "rew_energy" in e1["episode"]
    assert logged >= 3


def test_students_can_add_and_replace_terms():
    def forward_velocity(env, scale=1.0):
        return scale * env.root_lin_vel_w[:, 0]

    env = make("Ant", num_envs=3, seed=0, rewards={
        "fwd": RewardTerm(forward_velocity, weight=2.0, params={"scale": 0.5}),
        "progress": RewardTerm(lambda env: torch.zeros(env.num_envs), weight=1.0),
        "heading": 1.5,
    })
    env.reset()
    env.step(torch.ones(3, 8))
    parts = env.reward_manager.last_values()
    torch.testing.assert_close(parts["fwd"], 2.0 * 0.5 * env.root_lin_vel_w[:, 0])
    torch.testing.assert_close(parts["progress"], torch.zeros(3))
    torch.testing.assert_close(parts["heading"], 1.5 * ant_terms.heading(env))
    assert list(env.reward_terms)[-1] == "fwd"


@pytest.mark.parametrize(
    "rewards, match",
    [
        ({"not_a_term": 1.0}, "no default term"),
        ({"alive": "big"}, "must be a RewardTerm"),
        ({"alive": float("nan")}, "finite"),
        ({"mine": RewardTerm(func=3.0, weight=1.0)}, "callable"),
        ({"mine": RewardTerm(func=lambda env: env, weight=1.0, params=[1])}, "params must be a dict"),
        ({"bad name": RewardTerm(func=lambda env: env, weight=1.0)}, "identifiers"),
    ],
)
def test_invalid_reward_specs_name_the_term(rewards, match):
    with pytest.raises(ValueError, match=match):
        make("Ant", num_envs=1, rewards=rewards)


def test_a_term_with_the_wrong_shape_fails_at_the_first_step():
    env = make("Ant", num_envs=2, rewards={"oops": RewardTerm(lambda env: torch.zeros(3), 1.0)})
    env.reset()
    with pytest.raises(ValueError, match=r"'oops' must return a tensor of shape \(2,\)"):
        env.step(torch.zeros(2, 8))


def test_reward_manager_by_hand():
    terms = merge_reward_terms(
        {"a": RewardTerm(lambda env: env.x, 2.0), "b": RewardTerm(lambda env, k: env.x * k, -1.0, {"k": 3.0})},
        {"c": RewardTerm(lambda env: torch.ones(2), 0.0)},     # weight 0: dropped
    )
    assert list(terms) == ["a", "b"]
    rm = RewardManager(terms, num_envs=2, device=torch.device("cpu"))
    env = SimpleNamespace(x=torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(rm.compute(env), torch.tensor([2.0 - 3.0, 4.0 - 6.0]))
    torch.testing.assert_close(rm.compute(env), torch.tensor([-1.0, -2.0]))
    sums = rm.pop_episode_sums(torch.tensor([1]))
    torch.testing.assert_close(sums["rew_a"], torch.tensor([8.0]))
    torch.testing.assert_close(sums["rew_b"], torch.tensor([-12.0]))
    torch.testing.assert_close(rm.episode_sums[1], torch.zeros(2))       # popped envs restart at 0
    torch.testing.assert_close(rm.episode_sums[0], torch.tensor([4.0, -6.0]))
