"""Evaluate a policy for a fixed number of complete episodes."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from rlcourse.envs.base import VecEnv


def as_policy(agent: Any, env: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``obs -> actions`` for an rlcourse agent (its deterministic policy), an exported
    TorchScript policy or any callable ``obs -> actions``.

    Observations go to the agent's device as float32 (an agent trained on a GPU keeps its
    networks there; the env may hand out CPU tensors), actions to ``env``'s device.
    """
    if hasattr(agent, "inference_policy"):
        net = agent.inference_policy()
    elif callable(agent):
        net = agent
    else:
        raise TypeError(f"cannot run {type(agent).__name__}: pass an rlcourse agent or a callable obs -> actions")
    agent_device = getattr(agent, "device", None)
    env_device = getattr(env, "device", None)

    def policy(obs: torch.Tensor) -> torch.Tensor:
        actions = net(obs.to(agent_device or obs.device, torch.float32))
        if env_device is not None and isinstance(actions, torch.Tensor):
            actions = actions.to(env_device)
        return actions

    return policy


@torch.no_grad()
def evaluate(
    agent: Any,
    env: VecEnv,
    episodes: int = 10,
    seed: int | None = None,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Run the agent's deterministic policy until ``episodes`` episodes have finished.

    Episodes are spread evenly over the envs (env ``i`` contributes
    ``(episodes + i) // num_envs``), so short episodes are not over-represented the way
    they would be if we simply kept the first ``episodes`` to finish.

    Args:
        agent: an rlcourse algorithm, an exported TorchScript policy or any callable
            ``obs -> actions``.
        env: a batched env (it is reset first).
        episodes: number of complete episodes to average.
        seed: reset seed (``None`` keeps the env's own).
        max_steps: safety limit on batched steps (default: 2 x max_episode_length x rounds).

    Returns:
        ``episode_return_mean``, ``episode_return_std``, ``episode_length_mean``,
        ``episodes`` and the raw ``returns`` list.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    policy = as_policy(agent, env)
    n = env.num_envs
    targets = np.array([(episodes + i) // n for i in range(n)])
    got = np.zeros(n, dtype=np.int64)
    returns: list[list[float]] = [[] for _ in range(n)]
    lengths: list[list[int]] = [[] for _ in range(n)]
    obs, _ = env.reset(seed=seed)
    limit = max_steps or 2 * env.max_episode_length * int(targets.max() + 1)
    steps = 0
    while (got < targets).any():
        obs, _, _, _, extras = env.step(policy(obs))
        steps += 1
        ep = extras.get("episode")
        if ep is not None:
            for r, length, i in zip(ep["return"].tolist(), ep["length"].tolist(), ep["env_ids"].tolist()):
                if got[i] < targets[i]:
                    returns[i].append(float(r))
                    lengths[i].append(int(length))
                    got[i] += 1
        if steps >= limit:
            raise RuntimeError(f"evaluation did not finish {episodes} episodes within {limit} steps")
    flat_r = np.array([r for rs in returns for r in rs], dtype=np.float64)
    flat_l = np.array([length for ls in lengths for length in ls], dtype=np.float64)
    return {
        "episode_return_mean": float(flat_r.mean()),
        "episode_return_std": float(flat_r.std()),
        "episode_length_mean": float(flat_l.mean()),
        "episodes": int(flat_r.size),
        "returns": flat_r.tolist(),
    }


def random_policy(action_space: Any, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``obs -> actions`` drawn uniformly from a box ``action_space`` (e.g. ``env.single_action_space``).

    The baseline an evaluated return is compared with: what acting at random scores on the same
    episodes. The actions come from a generator of its own seeded with ``seed``, so evaluating
    this policy neither reads nor advances the global random number generators.
    """
    low = getattr(action_space, "low", None)
    high = getattr(action_space, "high", None)
    if low is None or high is None:
        raise TypeError(f"random_policy needs a box action space with low and high, got {action_space!r}")
    shape = tuple(action_space.shape)
    low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError("random_policy needs a bounded action space (finite low and high)")
    generator = torch.Generator().manual_seed(int(seed))

    def policy(obs: torch.Tensor) -> torch.Tensor:
        actions = low + (high - low) * torch.rand(obs.shape[0], low.numel(), generator=generator)
        return actions.reshape(obs.shape[0], *shape)

    return policy
