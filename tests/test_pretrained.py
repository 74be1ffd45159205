"""The policies shipped in ``rlcourse/pretrained`` (lecture 7 and lab 4 start from the Ant walker)."""

from __future__ import annotations

import pytest
import torch

import rlcourse
import rlcourse.pretrained
from rlcourse.algos import load_preset

from test_locomotion_learning import forward_distance


def test_the_ant_walker_walks() -> None:
    walker = rlcourse.pretrained.load("ant_walker")
    # 8 episodes of 200 control steps (10 s) on the nominal Ant; measured 19.9 m when shipped.
    assert forward_distance(walker.inference_policy()) > 8.0


def test_the_checkpoint_matches_its_recipe() -> None:
    recipe = rlcourse.pretrained.POLICIES["ant_walker"]
    state = torch.load(rlcourse.pretrained.path("ant_walker"), map_location="cpu", weights_only=False)
    assert state["algo"] == recipe["algo"].lower() and state["env_spec"]["env_id"] == recipe["task"]
    assert state["seed"] == recipe["seed"] and state["global_step"] >= recipe["total_steps"]
    preset = {**load_preset("ppo", recipe["preset"])["hyperparameters"], **recipe.get("hyperparameters", {})}
    as_list = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731  (YAML gives lists)
    assert {k: as_list(state["config"][k]) for k in preset} == {k: as_list(v) for k, v in preset.items()}


def test_the_walker_trains_further_on_a_new_env() -> None:
    env = rlcourse.envs.make("Ant", num_envs=8, seed=0, randomization={"friction": {"range": [0.5, 1.0]}})
    agent = rlcourse.pretrained.load("ant_walker", env=env)
    start = agent.global_step
    before = [p.detach().clone() for p in agent.actor_critic.parameters()]
    agent.learn(start + 8 * 16, eval_episodes=0, progress=False)   # one PPO iteration
    env.close()
    assert agent.global_step == start + 8 * 16
    after = list(agent.actor_critic.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))   # the update changed the policy


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown pretrained policy 'ant_runner'; available: ant_walker"):
        rlcourse.pretrained.load("ant_runner")
