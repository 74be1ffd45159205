"""Quadruped: PD joint targets, velocity commands, base-contact termination, tracking rewards."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlcourse.envs import make
from rlcourse.envs.locomotion import quadruped as q


def test_spaces_commands_and_observation_layout():
    env = make("Quadruped", num_envs=64, seed=0)
    assert (env.num_obs, env.num_actions, env.max_episode_length) == (48, 12, 1000)
    assert env.step_dt == pytest.approx(0.02)
    obs, _ = env.reset()
    c = env.commands
    assert c[:, 0].abs().max() <= 1.0 and c[:, 1].abs().max() <= 0.5 and c[:, 2].abs().max() <= 1.0
    assert c[:, 0].std() > 0.3                                   # drawn per env
    torch.testing.assert_close(obs[:, 9:12], c * torch.tensor([2.0, 2.0, 0.25]))
    torch.testing.assert_close(obs[:, 6:9], torch.tensor([0.0, 0.0, -1.0]).expand(64, 3))   # upright
    assert torch.all(obs[:, 36:] == 0)


def test_zero_action_holds_the_home_pose_with_the_pd_servos():
    env = make("Quadruped", num_envs=2, seed=0)
    env.reset()
    for _ in range(100):
        obs, rew, term, trunc, extras = env.step(torch.zeros(2, 12))
        assert not term.any()
    assert torch.all(env.root_pos_w[:, 2] > 0.25)
    assert torch.all(env.base_contact == 0)
    # Static PD servo: tau = kp (q_target - q) - kd q_dot with kp = 40, clipped to +-30 N m.
    expected = (40.0 * (env.default_dof_pos - env.dof_pos) - 1.0 * env.dof_vel).clamp(-30, 30)
    torch.testing.assert_close(env.joint_torques, expected, atol=0.5, rtol=0.0)
    assert env.joint_torques.abs().max() > 1.0                  # the legs carry the body


def test_action_sets_joint_targets():
    env = make("Quadruped", num_envs=1, seed=0)
    env.reset()
    a = torch.zeros(1, 12)
    a[0, 2] = -1.0                                              # FL knee: target = -1.5 - 0.5
    for _ in range(50):
        env.step(a)
    assert env.dof_pos[0, 2].item() == pytest.approx(-2.0, abs=0.1)


def test_base_contact_terminates():
    env = make("Quadruped", num_envs=2, seed=0)
    env.reset()
    env.sim.qpos[0, 2] = 0.3
    env.sim.qpos[0, 3:7] = [0.0, 1.0, 0.0, 0.0]                # env 0 upside down
    for _ in range(50):
        obs, rew, term, trunc, extras = env.step(torch.zeros(2, 12))
        if term[0]:
            break
    assert term[0] and not term[1] and not trunc.any()
    assert extras["final_obs"][0, 8].item() > 0.9               # gravity points "up" in the body frame
    assert extras["episode"]["env_ids"].tolist() == [0]


def test_base_contact_is_the_largest_touch_over_the_substeps():
    # Sensors are evaluated at the start of each physics substep; a touch in any of the control
    # step's substeps counts, not only in the last one.
    env = make("Quadruped", num_envs=2, seed=0, base_contact_force=1e9)   # lying on its back, no reset
    env.reset()
    env.sim.qpos[:, 2] = 0.25
    env.sim.qpos[:, 3:7] = [0.0, 1.0, 0.0, 0.0]
    touched = False
    for _ in range(30):
        _, _, term, trunc, _ = env.step(torch.zeros(2, 12))
        live = ~(term | trunc).numpy()            # a reset env's sensors start from zero
        per_substep = env.sim._out_sensor[live, :, 0]
        np.testing.assert_array_equal(env.sim.sensordata[live, 0], per_substep.max(axis=1))
        touch = [0, 13, 14, 15, 16]                 # the base's and the feet's touch sensors
        np.testing.assert_array_equal(env.sim.sensordata[live][:, touch], env.sim._out_sensor[live][:, :, touch].max(axis=1))
        other = [i for i in range(env.sim.sensordata.shape[1]) if i not in touch]
        np.testing.assert_array_equal(env.sim.sensordata[live][:, other], env.sim._out_sensor[live][:, -1, other])
        touched |= bool((per_substep.max(axis=1) > per_substep[:, -1]).any())
    assert touched, "no control step had a touch outside its last substep"


def test_tracking_rewards_by_hand():
    env = SimpleNamespace(
        commands=torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]]),
        root_lin_vel_b=torch.tensor([[0.5, 0.5, 0.1], [0.0, 0.0, 0.0]]),
        root_ang_vel_b=torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]]),
    )
    torch.testing.assert_close(q.track_lin_vel_xy_exp(env), torch.tensor([math.exp(-0.5 / 0.25), 1.0]))
    torch.testing.assert_close(q.track_ang_vel_z_exp(env), torch.tensor([math.exp(-0.25 / 0.25), 1.0]))
    torch.testing.assert_close(q.lin_vel_z_l2(env), torch.tensor([0.01, 0.0]))
    torch.testing.assert_close(q.ang_vel_xy_l2(env), torch.tensor([0.0, 0.25]))
    env = SimpleNamespace(actions=torch.tensor([[1.0, 0.0]]), prev_actions=torch.tensor([[0.5, -1.0]]))
    torch.testing.assert_close(q.action_rate_l2(env), torch.tensor([1.25]))


def test_pd_gain_randomization_changes_kp_and_kd_consistently():
    env = make("Quadruped", num_envs=3, seed=0, randomization={
        "actuator_kp": {"range": [0.5, 1.5]}, "actuator_kd": {"range": [2.0, 2.0]}})
    kp = env.dr.values["actuator_kp"]
    for i, m in enumerate(env.sim.models):
        np.testing.assert_allclose(m.actuator_gainprm[:, 0], 40.0 * kp[i])
        np.testing.assert_allclose(m.actuator_biasprm[:, 1], -40.0 * kp[i])
        np.testing.assert_allclose(m.actuator_biasprm[:, 2], -2.0)


def test_additive_pd_gains_add_to_kp_and_kd_themselves():
    # MuJoCo stores -kp and -kd in biasprm; "+0.5" must mean half a unit *more* damping.
    env = make("Quadruped", num_envs=2, seed=0, randomization={
        "actuator_kp": {"range": [5.0, 5.0], "operation": "additive"},
        "actuator_kd": {"range": [0.5, 0.5], "operation": "additive"}})
    for m in env.sim.models:
        np.testing.assert_allclose(m.actuator_gainprm[:, 0], 45.0)
        np.testing.assert_allclose(m.actuator_biasprm[:, 1], -45.0)
        np.testing.assert_allclose(m.actuator_biasprm[:, 2], -1.5)
    with pytest.raises(ValueError, match=r"\['actuator_strength'\]\.operation: position actuators are scaled"):
        make("Quadruped", num_envs=1, randomization={"actuator_strength": {"range": [0.5, 0.5], "operation": "additive"}})


def test_bad_command_ranges():
    with pytest.raises(ValueError, match="lin_vel_z"):
        make("Quadruped", num_envs=1, command_ranges={"lin_vel_z": (0, 1)})
    with pytest.raises(ValueError, match="low 1.0 > high 0.0"):
        make("Quadruped", num_envs=1, command_ranges={"lin_vel_x": (1.0, 0.0)})


def test_gait_terms_by_hand():
    env = SimpleNamespace(
        dof_lower=torch.tensor([-1.0, 0.0]), dof_upper=torch.tensor([1.0, 2.0]),
        # soft limits (90 % of the range): [-0.9, 0.9] and [0.1, 1.9]
        dof_pos=torch.tensor([[0.95, 1.0], [-1.0, 0.05], [0.0, 1.0]]),
    )
    torch.testing.assert_close(q.dof_pos_limits(env), torch.tensor([0.05, 0.1 + 0.05, 0.0]))
    env = SimpleNamespace(
        feet_lin_vel_w=torch.tensor([[[0.3, 0.4, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]]),
        feet_contact=torch.tensor([[1.0, 0.0, 1.0, 1.0]]),
    )
    # Only feet on the ground count, and only their horizontal speed: 0.25 + 0 + 0 + 0.
    torch.testing.assert_close(q.foot_slip(env), torch.tensor([0.25]))
    env = SimpleNamespace(
        feet_last_air_time=torch.tensor([[0.6, 0.0, 0.2, 0.0], [0.6, 0.0, 0.0, 0.0]]),
        feet_first_contact=torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
        commands=torch.tensor([[0.5, 0.0, 0.0], [0.05, 0.0, 0.5]]),
    )
    # Robot 0: (0.6 - 0.4) + (0.2 - 0.4); robot 1 is commanded to stand (turning in place): 0.
    torch.testing.assert_close(q.feet_air_time(env), torch.tensor([0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(q.feet_air_time(env, threshold=0.1), torch.tensor([0.6, 0.0]))
    env = SimpleNamespace(projected_gravity_b=torch.tensor([[0.6, 0.0, -0.8], [0.0, 0.0, -1.0]]))
    torch.testing.assert_close(q.flat_orientation_l2(env), torch.tensor([0.36, 0.0]))


def test_air_time_bookkeeping_follows_the_foot_sensors():
    env = make("Quadruped", num_envs=1, seed=0, nthread=1)
    env.reset()
    # Robot held in the air by hand: no foot touches, the air time grows by one control step per step.
    for k in range(1, 6):
        env.sim.qpos[0, 2] = 1.0
        env.sim.qvel[0, :] = 0.0
        env.step(torch.zeros(1, 12))
        assert env.feet_contact.sum() == 0
    # The contact filter keeps the first step's "touching" (reset), so the feet count as airborne from step 2.
    torch.testing.assert_close(env.feet_air_time, torch.full((1, 4), 4 * 0.02))
    # Dropped from just above the floor: each foot's first touchdown reports its swing time once.
    env.sim.qpos[0, 2] = 0.34
    seen = torch.zeros(1, 4)
    for _ in range(30):
        env.step(torch.zeros(1, 12))
        first = env.feet_first_contact.bool()
        assert torch.all(env.feet_last_air_time[first] > 4 * 0.02)
        assert torch.all(env.feet_last_air_time[~first] == 0)
        seen += env.feet_first_contact
    assert torch.all(seen == 1) and torch.all(env.feet_contact == 1) and torch.all(env.feet_air_time == 0)
    assert env.feet_contact_force.sum().item() == pytest.approx(15.1 * 9.81, rel=0.1)   # the feet carry the robot


def test_fixed_commands_survive_resets_and_bad_commands_are_refused():
    env = make("Quadruped", num_envs=2, seed=0, nthread=1)
    env.set_commands([[0.5, 0.0, 0.0], [0.0, 0.0, -0.8]])
    obs, _ = env.reset()
    torch.testing.assert_close(obs[:, 9:12], torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -0.2]]))
    env.sim.qpos[1, 3:7] = [0.0, 1.0, 0.0, 0.0]                # env 1 upside down: it falls and resets
    for _ in range(30):
        _, _, term, _, _ = env.step(torch.zeros(2, 12))
        if term[1]:
            break
    assert term[1]
    torch.testing.assert_close(env.commands[1], torch.tensor([0.0, 0.0, -0.8]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        env.set_commands([[0.5, 0.0, 0.0]])
    with pytest.raises(ValueError, match="finite"):
        env.set_commands([[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]])
    env.set_commands(None)
    env.reset()
    assert not torch.equal(env.commands[0], torch.tensor([0.5, 0.0, 0.0]))
