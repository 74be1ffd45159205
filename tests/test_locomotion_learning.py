"""PPO learns to walk forward on the MuJoCo-backed Ant (fixed seed, measured threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlcourse
from rlcourse.envs import make


@torch.no_grad()
def forward_distance(policy, episodes: int = 8, episode_length: int = 200, seed: int = 2000) -> float:
    """Mean x displacement (m) of deterministic episodes of ``episode_length`` control steps."""
    env = make("Ant", num_envs=episodes, seed=seed, episode_length=episode_length)
    obs, _ = env.reset()
    dist: list[float] = []
    while len(dist) < episodes:
        obs, *_, extras = env.step(policy(obs))
        if "episode" in extras:
            dist += extras["episode"]["x_distance"].tolist()
    return float(np.mean(dist[:episodes]))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ppo_walks_forward_on_ant():
    env = make("Ant", num_envs=128, seed=0)
    agent = rlcourse.PPO(env, seed=0)                      # presets/ppo.yaml "Ant"
    agent.learn(300 * 128 * 16, eval_episodes=0, progress=False)   # 300 iterations, 614,400 steps
    baseline = forward_distance(lambda obs: torch.zeros(obs.shape[0], 8))
    walked = forward_distance(agent.inference_policy())
    print(f"forward distance {walked:.2f} m in 10 s (standing still: {baseline:.2f} m)")
    # Standing still moves ~0 m. How far the deterministic policy walks in 10 s (200 control
    # steps), measured on 2 CPU cores: after 100 iterations it is anywhere from 0.1 to 2.7 m
    # (runs that differ only in floating-point details, e.g. the CPU model, land far apart);
    # the gait appears between 150 and 250 iterations: seeds 1 / 2 / 3 walked 0.9 / 0.3 / 2.7 m
    # after 150, 1.2 / 0.6 / 1.8 m after 200 and 9.4 / 6.9 / 9.8 m after 250 (~45 s per 100
    # iterations on a quiet machine). The full preset (1M steps) reaches ~2 m/s.
    assert abs(baseline) < 0.3
    assert walked > 2.0, f"forward distance {walked:.2f} m in 10 s"
