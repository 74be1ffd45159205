"""rlcourse.evaluate_robustness: a grid of fixed physics, one evaluation per point, table + heat-map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlcourse


def push_all_joints(obs: torch.Tensor) -> torch.Tensor:
    return torch.ones(obs.shape[0], 8)


SHORT = {"episode_length": 20}


def test_grid_rows_and_the_swept_physics_matter():
    res = rlcourse.evaluate_robustness(
        push_all_joints, "Ant", sweep={"actuator_strength": [0.0, 1.0], "mass_scale": [0.7, 1.3]},
        episodes=2, num_envs=2, env_kwargs=SHORT,
    )
    assert res.params == ["actuator_strength", "mass_scale"]
    assert [(r["actuator_strength"], r["mass_scale"]) for r in res.rows] == [(0.0, 0.7), (0.0, 1.3), (1.0, 0.7), (1.0, 1.3)]
    grid = res.grid()
    assert grid.shape == (2, 2) and np.isfinite(grid).all()
    assert all(r["episodes"] == 2 and r["episode_length_mean"] == 20 for r in res.rows)
    # With no motor strength full-torque commands do nothing; with full strength they move the ant.
    assert abs(grid[0, 0] - grid[1, 0]) > 1.0
    assert "| actuator_strength | mass_scale | episode_return_mean" in res.to_markdown()


def test_latency_in_physics_steps_sweeps_between_whole_control_steps():
    """The Ant's control step is 5 physics steps: a latency of 0 or 5 physics steps is one of 0 or 1
    control steps exactly, and 2 physics steps is a robot of its own."""
    def feedback(obs: torch.Tensor) -> torch.Tensor:    # reacts to the joints, so a delay changes the motion
        return torch.sin(5.0 * obs[:, 12:20] + 3.0 * obs[:, 20:28])

    kw = dict(episodes=2, num_envs=2, env_kwargs=SHORT)
    sub = rlcourse.evaluate_robustness(feedback, "Ant", sweep={"action_latency_physics_steps": [0, 2, 5]}, **kw).grid()
    whole = rlcourse.evaluate_robustness(feedback, "Ant", sweep={"action_latency": [0, 1]}, **kw).grid()
    assert sub[0] == whole[0] and sub[2] == whole[1]
    assert sub[1] not in (sub[0], sub[2])


def test_same_sweep_same_numbers():
    kw = dict(sweep={"friction": [0.3, 1.0]}, episodes=2, num_envs=2, env_kwargs=SHORT)
    a = rlcourse.evaluate_robustness(push_all_joints, "Ant", **kw)
    b = rlcourse.evaluate_robustness(push_all_joints, "Ant", **kw)
    np.testing.assert_array_equal(a.grid(), b.grid())


def test_heatmap_and_line_plot_are_written(tmp_path):
    two = rlcourse.evaluate_robustness(push_all_joints, "Ant", sweep={"friction": [0.5, 1.0], "action_latency": [0, 2]},
                                       episodes=2, num_envs=2, env_kwargs=SHORT)
    two.heatmap(tmp_path / "heat.png")
    one = rlcourse.evaluate_robustness(push_all_joints, "Ant", sweep={"obs_noise_std": [0.0, 0.1]},
                                       episodes=2, num_envs=2, env_kwargs=SHORT)
    fig = one.heatmap(tmp_path / "line.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000 and (tmp_path / "line.png").stat().st_size > 1000
    assert fig.axes[0].get_xlabel() == "obs_noise_std"


def test_accepts_an_exported_torchscript_policy(tmp_path):
    class Zero(torch.nn.Module):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return torch.zeros(obs.shape[0], 8)

    path = tmp_path / "policy.pt"
    torch.jit.script(Zero()).save(str(path))
    res = rlcourse.evaluate_robustness(str(path), "Ant", sweep={"friction": [1.0]}, episodes=1, num_envs=1, env_kwargs=SHORT)
    assert res.rows[0]["episode_length_mean"] == 20


@pytest.mark.parametrize(
    "sweep, match",
    [
        (None, "at least one parameter"),
        ({"frction": [1.0]}, r"unknown sweep parameter 'frction' \(did you mean 'friction'\?\)"),
        ({"friction": []}, "non-empty list"),
        ({"mass_scale": [-1.0]}, r"randomization\['mass'\]\.range"),
        ({"mass_scale": [1.0], "added_mass": [1.0]}, "both set 'mass'"),
    ],
)
def test_bad_sweeps_are_clear_errors(sweep, match):
    with pytest.raises(ValueError, match=match):
        rlcourse.evaluate_robustness(push_all_joints, "Ant", sweep=sweep, episodes=1, num_envs=1, env_kwargs=SHORT)


@pytest.mark.parametrize("task, root, num_actions", [("Ant", "torso", 8), ("Quadruped", "base", 12)])
def test_added_mass_goes_on_each_task_s_floating_base(task, root, num_actions, monkeypatch):
    import mujoco

    from rlcourse import envs
    from rlcourse.robustness import _root_body_name

    assert _root_body_name(task, {}) == root
    made, real_make = [], envs.make

    def recording_make(*args, **kwargs):
        made.append(real_make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(envs, "make", recording_make)            # robustness imports it at call time
    zero = lambda obs: torch.zeros(obs.shape[0], num_actions)  # noqa: E731
    res = rlcourse.evaluate_robustness(zero, task, sweep={"added_mass": [0.0, 5.0]}, episodes=1, num_envs=1,
                                       env_kwargs={"episode_length": 5})
    assert [row["added_mass"] for row in res.rows] == [0.0, 5.0]
    graded = [e for e in made if e.dr.terms]                       # the envs of the two grid points
    assert len(graded) >= 2
    body = mujoco.mj_name2id(graded[-1].model, mujoco.mjtObj.mjOBJ_BODY, root)
    nominal = graded[-1].model.body_mass[body]
    assert [e.sim.models[0].body_mass[body] - nominal for e in graded[-2:]] == pytest.approx([0.0, 5.0])
