"""Domain randomization changes the per-env physics (and only when asked), with clear config errors."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from rlcourse.envs import make
from rlcourse.envs.locomotion.randomization import ActionLatency as ActionLatencyRef


def synced(env) -> None:
    """Give every env exactly env 0's state (identical initial conditions)."""
    env.sim.state[:] = env.sim.state[0]
    env._refresh()


def spread_after(env, steps: int = 25) -> float:
    """Max difference between envs' joint positions after identical actions from identical states."""
    env.reset()
    synced(env)
    a = torch.tensor([[0.6, -0.6, 0.6, -0.6, 0.6, -0.6, 0.6, -0.6]]).repeat(env.num_envs, 1)
    for t in range(steps):
        env.step(a if t % 10 < 5 else -a)
    return float(np.abs(env.sim.state[:, 1:] - env.sim.state[0, 1:]).max())


def test_without_randomization_identical_envs_stay_identical():
    assert spread_after(make("Ant", num_envs=4, seed=0)) == 0.0


@pytest.mark.parametrize(
    "cfg",
    [
        {"mass": {"range": [0.5, 1.5], "bodies": ["torso"]}},
        {"friction": {"range": [0.2, 1.0]}},
        {"actuator_strength": {"range": [0.7, 1.3]}},
        {"joint_damping": {"range": [0.2, 5.0], "distribution": "loguniform"}},
        {"gravity": {"range": [0.0, 1.0], "distribution": "gaussian", "axes": "xy"}},
    ],
    ids=["mass", "friction", "actuator_strength", "joint_damping", "gravity"],
)
def test_randomized_physics_makes_identical_envs_diverge(cfg):
    assert spread_after(make("Ant", num_envs=4, seed=0, randomization=cfg)) > 1e-3


def test_mass_scaling_scales_inertia_and_is_drawn_per_env():
    env = make("Ant", num_envs=6, seed=0, randomization={"mass": {"range": [0.5, 1.5], "bodies": ["torso", "aux_1"]}})
    nominal = env.sim.model
    torso = mujoco.mj_name2id(nominal, mujoco.mjtObj.mjOBJ_BODY, "torso")
    other = mujoco.mj_name2id(nominal, mujoco.mjtObj.mjOBJ_BODY, "aux_2")
    scales = env.dr.values["mass"][:, 0]
    assert scales.min() >= 0.5 and scales.max() <= 1.5 and np.unique(scales).size == 6
    for i, m in enumerate(env.sim.models):
        assert m.body_mass[torso] == pytest.approx(nominal.body_mass[torso] * scales[i])
        np.testing.assert_allclose(m.body_inertia[torso], nominal.body_inertia[torso] * scales[i])
        assert m.body_mass[other] == nominal.body_mass[other]          # not selected
        assert m.body_subtreemass[0] == pytest.approx(m.body_mass.sum())  # derived constants recomputed


def test_additive_mass_and_friction_on_named_geoms():
    env = make("Ant", num_envs=3, seed=0, randomization={
        "mass": {"range": [1.0, 1.0], "operation": "additive", "bodies": ["torso"]},
        "friction": {"range": [0.25, 0.25], "geoms": ["floor"]},
    })
    nominal = env.sim.model
    floor = mujoco.mj_name2id(nominal, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    for m in env.sim.models:
        assert m.body_mass[1] == pytest.approx(nominal.body_mass[1] + 1.0)
        assert m.geom_friction[floor, 0] == pytest.approx(0.25 * nominal.geom_friction[floor, 0])
        assert m.geom_friction[floor + 1, 0] == nominal.geom_friction[floor + 1, 0]
        np.testing.assert_array_equal(m.geom_friction[:, 1:], nominal.geom_friction[:, 1:])


def test_actuator_damping_and_gravity_fields():
    env = make("Ant", num_envs=3, seed=1, randomization={
        "actuator_strength": {"range": [0.5, 0.5]},
        "joint_damping": {"range": [2.0, 2.0]},
        "gravity": {"range": [-1.0, -1.0], "axes": "z"},
    })
    nominal = env.sim.model
    for m in env.sim.models:
        np.testing.assert_allclose(m.actuator_gainprm[:, 0], 0.5 * nominal.actuator_gainprm[:, 0])
        np.testing.assert_allclose(m.dof_damping[6:], 2.0 * nominal.dof_damping[6:])
        np.testing.assert_array_equal(m.dof_damping[:6], nominal.dof_damping[:6])   # the free joint
        np.testing.assert_allclose(m.opt.gravity, [0.0, 0.0, -10.81])


def test_same_seed_same_draws_and_reset_mode_redraws_only_reset_envs():
    cfg = {"friction": {"range": [0.2, 1.0], "mode": "reset"}, "mass": {"range": [0.8, 1.2]}}
    a = make("Ant", num_envs=4, seed=3, randomization=cfg)
    b = make("Ant", num_envs=4, seed=3, randomization=cfg)
    np.testing.assert_array_equal(a.dr.values["mass"], b.dr.values["mass"])
    a.reset()
    mass0, fric0 = a.dr.values["mass"].copy(), a.dr.values["friction"].copy()
    a.episode_length[1] = a.max_episode_length - 1                 # env 1 times out next step
    *_, extras = a.step(torch.zeros(4, 8))
    assert extras["episode"]["env_ids"].tolist() == [1]
    fric1 = a.dr.values["friction"]
    assert fric1[1, 0] != fric0[1, 0]                                # re-drawn at reset
    np.testing.assert_array_equal(np.delete(fric1, 1, 0), np.delete(fric0, 1, 0))
    np.testing.assert_array_equal(a.dr.values["mass"], mass0)       # startup: drawn once
    assert a.sim.models[1].geom_friction[0, 0] == pytest.approx(fric1[1, 0] * a.sim.model.geom_friction[0, 0])


def test_action_latency_delays_actions_by_whole_control_steps():
    g = torch.Generator().manual_seed(0)
    acts = [torch.rand(2, 8, generator=g) * 2 - 1 for _ in range(12)]
    delayed = make("Ant", num_envs=2, seed=0, randomization={"action_latency": {"range": [2, 2]}})
    plain = make("Ant", num_envs=2, seed=0)
    assert delayed.dr.latency.tolist() == [2, 2]
    delayed.reset()
    plain.reset()
    for t, a in enumerate(acts):
        delayed.step(a)
        plain.step(acts[t - 2] if t >= 2 else torch.zeros(2, 8))
        np.testing.assert_array_equal(delayed.sim.state, plain.sim.state)
    # The observation still shows what the policy commanded, not the delayed action.
    assert torch.equal(delayed.actions, acts[-1])


def replay_with_substep_latency(env, acts, k: int) -> None:
    """Step ``env`` (latency ``k`` physics steps) with ``acts`` and, next to it, a bare MujocoBatch
    of the same model fed by hand: physics step ``j`` of control step ``t`` applies the action
    sent ``k`` physics steps earlier, the action of control step ``floor((5 t + j - k) / 5)``
    (zeros before the episode's first action). Their states must match exactly."""
    from rlcourse.envs.locomotion.backend import MujocoBatch

    env.reset()
    bare = MujocoBatch(env.model, env.num_envs, nthread=1)
    bare.state[:] = env.sim.state
    dec = env.decimation
    for t, a in enumerate(acts):
        env.step(a)
        ctrl = np.zeros((env.num_envs, dec, 8))
        for j in range(dec):
            sent = (dec * t + j - k) // dec
            if sent >= 0:
                ctrl[:, j] = acts[sent].numpy()
        bare.step(ctrl, dec)
        np.testing.assert_array_equal(env.sim.state, bare.state)
    bare.close()


@pytest.mark.parametrize("k", [0, 2, 4, 7])
def test_action_latency_in_physics_steps_holds_the_previous_action(k):
    g = torch.Generator().manual_seed(k)
    acts = [torch.rand(2, 8, generator=g) * 2 - 1 for _ in range(8)]
    env = make("Ant", num_envs=2, seed=0, randomization={"action_latency": {"range": [k, k], "unit": "physics_steps"}})
    assert env.dr.latency.tolist() == [k, k] and env.dr.max_latency == k // 5 + 1
    replay_with_substep_latency(env, acts, k)


def test_action_latency_in_physics_steps_of_a_whole_control_step_is_a_control_step():
    g = torch.Generator().manual_seed(0)
    acts = [torch.rand(2, 8, generator=g) * 2 - 1 for _ in range(8)]
    sub = make("Ant", num_envs=2, seed=0, randomization={"action_latency": {"range": [5, 5], "unit": "physics_steps"}})
    whole = make("Ant", num_envs=2, seed=0, randomization={"action_latency": {"range": [1, 1]}})
    sub.reset()
    whole.reset()
    for a in acts:
        sub.step(a)
        whole.step(a)
        np.testing.assert_array_equal(sub.sim.state, whole.sim.state)


def test_action_latency_in_physics_steps_uses_the_given_buffer_class_twice():
    made = []

    class Recording(ActionLatencyRef):
        def __init__(self, num_envs, num_actions, max_latency):
            super().__init__(num_envs, num_actions, max_latency)
            made.append(self)

    env = make("Ant", num_envs=3, seed=0, randomization={"action_latency": {"range": [0, 6], "unit": "physics_steps"}})
    env.dr.override(latency_buffer=Recording)
    assert len(made) == 2 and all(b.history.shape == (3, 3, 8) for b in made)
    k = env.dr.latency
    assert made[0].delays.tolist() == (k // 5).tolist() and made[1].delays.tolist() == (k // 5 + 1).tolist()


def test_latency_is_drawn_per_env_within_range():
    env = make("Ant", num_envs=64, seed=0, randomization={"action_latency": {"range": [0, 3]}})
    env.reset()
    assert set(env.dr.latency.tolist()) == {0, 1, 2, 3}


def test_pushes_add_root_velocity_at_the_interval():
    cfg = {"push": {"interval": 3, "velocity_range": {"x": [1.0, 1.0], "yaw": [0.5, 0.5]}}}
    pushed, plain = make("Ant", num_envs=2, seed=0, randomization=cfg), make("Ant", num_envs=2, seed=0)
    pushed.reset()
    plain.reset()
    for t in range(1, 4):
        o1, _, _, _, extras = pushed.step(torch.zeros(2, 8))
        o2, *_ = plain.step(torch.zeros(2, 8))
        assert torch.equal(extras["final_obs"], o1)                   # nobody finished: rows equal obs
        if t < 3:
            assert torch.equal(o1, o2)
    dv = pushed.sim.qvel[:, :6] - plain.sim.qvel[:, :6]
    np.testing.assert_allclose(dv, [[1.0, 0, 0, 0, 0, 0.5]] * 2, atol=1e-12)
    torch.testing.assert_close(pushed.root_lin_vel_w[:, 0] - plain.root_lin_vel_w[:, 0], torch.ones(2))
    assert not torch.equal(o1, o2)                                  # the obs already shows the push


def test_observation_and_action_noise():
    noisy = make("Ant", num_envs=64, seed=0, randomization={"obs_noise": {"range": [0.0, 0.05]}})
    clean = make("Ant", num_envs=64, seed=0)
    o1, _ = noisy.reset()
    o2, _ = clean.reset()
    diff = o1 - o2
    assert abs(float(diff.mean())) < 0.01 and 0.04 < float(diff.std()) < 0.06
    o1, *_, e1 = noisy.step(torch.zeros(64, 8))
    assert torch.equal(e1["final_obs"], o1)                         # same noise on unfinished rows

    shaky = make("Ant", num_envs=2, seed=0, randomization={"action_noise": {"range": [0.0, 0.1]}})
    still = make("Ant", num_envs=2, seed=0)
    shaky.reset()
    still.reset()
    shaky.step(torch.zeros(2, 8))
    still.step(torch.zeros(2, 8))
    assert 0.0 < float(shaky.actions.abs().max()) < 0.6 and torch.all(still.actions == 0)


def test_linear_schedule_grows_the_deviation_from_no_change():
    env = make("Ant", num_envs=2, seed=0, randomization={
        "mass": {"range": [2.0, 3.0], "mode": "reset", "schedule": "linear", "schedule_steps": 10}})
    np.testing.assert_array_equal(env.dr.values["mass"], 1.0)      # step 0: no change yet
    term = env.dr.terms["mass"]
    state = env.dr.generator.get_state()
    env.dr.step_count = 10
    full = env.dr.sample(term, (1000,))
    env.dr.generator.set_state(state)
    env.dr.step_count = 5
    half = env.dr.sample(term, (1000,))
    np.testing.assert_allclose(half, 1.0 + 0.5 * (full - 1.0))
    assert full.min() >= 2.0 and full.max() <= 3.0


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"masss": {"range": [1, 2]}}, r"unknown parameter 'masss' \(did you mean 'mass'\?\)"),
        ({"mass": {"range": [1.5, 0.5]}}, r"randomization\['mass'\]\.range: low 1.5 > high 0.5"),
        ({"mass": {"range": [0.0, 1.0]}}, r"randomization\['mass'\]\.range: a mass scale must be > 0"),
        ({"mass": {"range": [-50.0, 1.0], "operation": "additive"}}, r"mass.*<= 0 \(a mass cannot be negative\)"),
        ({"mass": {"range": [0.9, 1.1], "bodies": ["torsoo"]}}, r"\['mass'\]\.bodies: unknown name 'torsoo' \(did you mean 'torso'\?\)"),
        ({"friction": {"range": [0.5, 1.0], "geoms": ["ice"]}}, r"\['friction'\]\.geoms: unknown name 'ice'"),
        ({"friction": {"range": [0.5, 1.0], "distrib": "uniform"}}, r"\['friction'\]\.distrib: unknown key"),
        ({"friction": {"range": [0.5, 1.0], "distribution": "beta"}}, r"\['friction'\]\.distribution"),
        ({"friction": {"range": [-0.5, 1.0]}}, r"\['friction'\]\.range: a scale must be >= 0"),
        ({"friction": {"range": [0.5]}}, r"\['friction'\]\.range: must be a pair"),
        ({"friction": {}}, r"\['friction'\]\.range: is required"),
        ({"joint_damping": {"range": [0.0, 1.0], "distribution": "loguniform"}}, r"loguniform needs low > 0"),
        ({"gravity": {"range": [0.0, -1.0], "distribution": "gaussian"}}, r"\['gravity'\]\.range: .*std -1.0 < 0"),
        ({"gravity": {"range": [0.0, 1.0], "axes": "xw"}}, r"\['gravity'\]\.axes"),
        ({"friction": {"range": [0.5, 1.0], "mode": "sometimes"}}, r"\['friction'\]\.mode"),
        ({"friction": {"range": [0.5, 1.0], "mode": "interval"}}, r"\['friction'\]\.interval: mode 'interval' needs"),
        ({"friction": {"range": [0.5, 1.0], "schedule": "linear"}}, r"\['friction'\]\.schedule_steps"),
        ({"mass": {"range": [0.5, 1.5], "schedule": "linear", "schedule_steps": 10}},
         r"\['mass'\]\.schedule: a linear schedule needs values drawn again"),
        ({"action_latency": {"range": [0, 1], "schedule": "linear", "schedule_steps": 10}},
         r"\['action_latency'\]\.schedule: not supported"),
        ({"push": {"interval": 10, "velocity_range": {"x": [0, 1]}, "range": [0, 1]}}, r"\['push'\]\.range: pushes are set by"),
        ({"action_latency": {"range": [0, 1.5]}}, r"\['action_latency'\]\.range: latency is a uniform integer"),
        ({"action_latency": {"range": [0, 2], "unit": "ms"}}, r"\['action_latency'\]\.unit: must be one of"),
        ({"friction": {"range": [0.5, 1.0], "unit": "physics_steps"}}, r"\['friction'\]\.unit: only valid for"),
        ({"push": {"interval": 10}}, r"\['push'\]\.velocity_range"),
        ({"push": {"interval": 10, "velocity_range": {"w": [0, 1]}}}, r"\['push'\]\.velocity_range\.w: unknown axis"),
        ({"obs_noise": {"range": [0.0, 0.1], "mode": "reset"}}, r"\['obs_noise'\]\.mode"),
        ({"actuator_kp": {"range": [0.9, 1.1]}}, r"no position actuators"),
        ([("mass", 1)], r"must be a dict"),
    ],
)
def test_invalid_configs_name_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        make("Ant", num_envs=1, randomization=cfg)
