"""Isaac Lab and IsaacGymEnvs adapters, checked against small fakes of the two APIs.

The fakes follow the documented step contracts (see rlcourse/envs/isaac.py and
/work/shared/reference/isaac_and_backends.md sections 1.1 and 2.1), including the
parts that are easy to get wrong:

* ``FakeVecTask`` (IsaacGymEnvs): ``step -> (obs_dict {"obs"}, rew_buf, reset_buf, extras)``,
  ``reset_buf`` is the task's own ``long`` buffer (returned, not copied), resets are
  **deferred** to the next step's ``post_physics_step``, ``extras["time_outs"]``.
* ``FakeDirectRLEnv`` (Isaac Lab): 5-tuple, obs dict ``{"policy", "critic"}``, resets in
  the **same** step, no ``time_outs`` in extras, ``extras["log"]`` after resets,
  ``terminated`` and ``truncated`` can both be True.

The task in both: a 1-D point ``x`` pushed by the action (``v = action``, ``x += v * dt``),
terminated when ``|x| > 1``, reward ``1 - x^2`` after the move, reset to
``x ~ U(-0.2, 0.2)`` from torch's global generator. Pushing with +1 from
``x0 in [-0.2, 0.2]`` crosses ``x = 1`` on step 7 or 8 (dt = 0.2); with action 0 the
point never moves and the episode times out.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcourse import envs
from rlcourse.envs import VecEnv
from rlcourse.envs.isaac import IsaacLabAdapter, VecTaskAdapter

DT = 0.2


def _obs(x: torch.Tensor, v: torch.Tensor, progress: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.stack([x, v, progress.float() / max_len], dim=1)


class FakeVecTask:
    """IsaacGymEnvs ``VecTask`` contract (vec_task.py step/reset, ant.py post_physics_step)."""

    def __init__(self, num_envs: int = 4, max_episode_length: int = 10, reset_dtype: torch.dtype = torch.long,
                 num_states: int = 0) -> None:
        self.num_envs, self.num_obs, self.num_actions, self.num_states = num_envs, 3, 1, num_states
        self.max_episode_length = max_episode_length
        self.device, self.rl_device = "cpu", "cpu"
        self.clip_obs, self.clip_actions = np.inf, 1.0
        self.act_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.obs_buf = torch.zeros(num_envs, 3)
        self.states_buf = torch.zeros(num_envs, max(num_states, 1))
        self.rew_buf = torch.zeros(num_envs)
        self.reset_buf = torch.ones(num_envs, dtype=reset_dtype)   # ones: VecTask starts "all done"
        self.timeout_buf = torch.zeros(num_envs, dtype=torch.long)
        self.progress_buf = torch.zeros(num_envs, dtype=torch.long)
        self.extras: dict = {}
        self.obs_dict: dict = {}
        self.x = torch.zeros(num_envs)
        self.v = torch.zeros(num_envs)
        self.reset_count = torch.zeros(num_envs, dtype=torch.long)   # test instrumentation

    def reset_idx(self, env_ids: torch.Tensor) -> None:
        self.x[env_ids] = torch.rand(len(env_ids)) * 0.4 - 0.2
        self.v[env_ids] = 0.0
        self.progress_buf[env_ids] = 0
        self.reset_buf[env_ids] = 0
        self.reset_count[env_ids] += 1

    def pre_physics_step(self, actions: torch.Tensor) -> None:
        self.actions = actions.clone()

    def compute_observations(self) -> None:
        self.obs_buf[:] = _obs(self.x, self.v, self.progress_buf, self.max_episode_length)
        self.states_buf[:, 0] = self.x * 10.0

    def get_state(self) -> torch.Tensor:
        return self.states_buf.clone()

    def compute_reward(self) -> None:
        self.rew_buf[:] = 1.0 - self.x**2
        ones = torch.ones_like(self.reset_buf)
        reset = torch.where(self.x.abs() > 1.0, ones, self.reset_buf)
        self.reset_buf[:] = torch.where(self.progress_buf >= self.max_episode_length - 1, ones, reset)

    def post_physics_step(self) -> None:
        self.progress_buf += 1
        env_ids = self.reset_buf.nonzero(as_tuple=False).flatten()   # deferred reset
        if len(env_ids) > 0:
            self.reset_idx(env_ids)
        self.compute_observations()
        self.compute_reward()

    def step(self, actions: torch.Tensor):
        actions = torch.clamp(actions, -self.clip_actions, self.clip_actions)
        self.pre_physics_step(actions)
        # "Physics", written in place into the sim buffers like Isaac Gym's tensors (the runner
        # steps under torch.inference_mode, where a new tensor could not be updated later).
        self.v[:] = self.actions[:, 0]
        self.x += self.v * DT
        self.post_physics_step()
        self.timeout_buf = (self.progress_buf >= self.max_episode_length - 1) & (self.reset_buf != 0)
        self.extras["time_outs"] = self.timeout_buf.to(self.rl_device)
        self.obs_dict["obs"] = torch.clamp(self.obs_buf, -self.clip_obs, self.clip_obs).to(self.rl_device)
        if self.num_states > 0:
            self.obs_dict["states"] = self.get_state()
        # The task's own buffers, not copies (.to() on the same device returns the tensor itself).
        return self.obs_dict, self.rew_buf.to(self.rl_device), self.reset_buf.to(self.rl_device), self.extras


class FakeDirectRLEnv(gym.Env):
    """Isaac Lab ``DirectRLEnv`` contract (direct_rl_env.py step/reset, locomotion_env.py _get_dones)."""

    def __init__(self, num_envs: int = 4, max_episode_length: int = 10) -> None:
        self.num_envs, self.max_episode_length, self.device = num_envs, max_episode_length, "cpu"
        self.single_observation_space = gym.spaces.Dict({
            "policy": gym.spaces.Box(-np.inf, np.inf, (3,)),
            "critic": gym.spaces.Box(-np.inf, np.inf, (4,)),
        })
        self.single_action_space = gym.spaces.Box(-np.inf, np.inf, (1,))
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.x = torch.zeros(num_envs)
        self.v = torch.zeros(num_envs)
        self.extras: dict = {}
        self.reset_count = torch.zeros(num_envs, dtype=torch.long)
        self.last_actions: torch.Tensor | None = None
        # DirectRLEnv.step writes these in place: self.reset_terminated[:], self.reset_time_outs[:] = ...
        self.reset_terminated = torch.zeros(num_envs, dtype=torch.bool)
        self.reset_time_outs = torch.zeros(num_envs, dtype=torch.bool)

    def _get_observations(self) -> dict[str, torch.Tensor]:
        policy = _obs(self.x, self.v, self.episode_length_buf, self.max_episode_length)
        return {"policy": policy, "critic": torch.cat([policy, (self.x * 10.0)[:, None]], dim=1)}

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        self.x[env_ids] = torch.rand(len(env_ids)) * 0.4 - 0.2
        self.v[env_ids] = 0.0
        self.extras["log"] = {"Episode_Reward/alive": torch.tensor(float(len(env_ids)))}
        self.episode_length_buf[env_ids] = 0
        self.reset_count[env_ids] += 1

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            torch.manual_seed(seed)
        self._reset_idx(torch.arange(self.num_envs))
        return self._get_observations(), self.extras

    def step(self, action: torch.Tensor):
        action = action.to(self.device)
        self.last_actions = action.clone()
        self.v[:] = action[:, 0]
        self.x += self.v * DT
        self.episode_length_buf += 1
        died = self.x.abs() > 1.0
        time_out = self.episode_length_buf >= self.max_episode_length - 1   # may overlap with died
        self.reset_terminated[:], self.reset_time_outs[:] = died, time_out
        reward = 1.0 - self.x**2
        reset_ids = (died | time_out).nonzero().flatten()
        if len(reset_ids) > 0:
            self._reset_idx(reset_ids)                                       # same-step reset
        return self._get_observations(), reward, self.reset_terminated, self.reset_time_outs, self.extras


def _full(num_envs: int, value: float) -> torch.Tensor:
    return torch.full((num_envs, 1), value)


def _step_until_done(env: VecEnv, action: float, limit: int = 50):
    for t in range(1, limit + 1):
        out = env.step(_full(env.num_envs, action))
        if (out[2] | out[3]).any():
            return t, out
    raise AssertionError(f"no episode ended in {limit} steps")


@pytest.fixture(params=["vectask", "isaaclab"])
def adapted(request):
    """(adapter, fake) for both simulators."""
    if request.param == "vectask":
        fake = FakeVecTask()
        return VecTaskAdapter(fake, env_id="fake-vectask"), fake
    fake = FakeDirectRLEnv()
    return IsaacLabAdapter(fake, env_id="fake-isaaclab"), fake


# --------------------------------------------------------------------------- protocol
def test_protocol_shapes_dtypes(adapted) -> None:
    env, _ = adapted
    assert isinstance(env, VecEnv)
    assert (env.num_envs, env.num_obs, env.num_actions, env.is_discrete) == (4, 3, 1, False)
    assert env.max_episode_length == 10 and env.device == torch.device("cpu")
    assert env.single_observation_space.shape == (3,) and env.single_action_space.shape == (1,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 3) and obs.dtype == torch.float32
    obs, rew, term, trunc, extras = env.step(torch.zeros(4, 1))
    assert obs.shape == (4, 3) and obs.dtype == torch.float32
    assert rew.shape == (4,) and rew.dtype == torch.float32
    assert term.shape == trunc.shape == (4,) and term.dtype == trunc.dtype == torch.bool
    assert extras["time_outs"].dtype == torch.bool and torch.equal(extras["time_outs"], trunc)
    assert "episode" not in extras  # nothing ended on the first step


def test_step_before_reset_and_bad_actions(adapted) -> None:
    env, _ = adapted
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(4, 1))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4, 1\)"):
        env.step(torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.tensor([[0.0], [float("nan")], [0.0], [0.0]]))


def test_reset_is_seeded(adapted) -> None:
    env, _ = adapted
    a = env.reset(seed=5)[0]
    traj_a = [env.step(_full(4, 0.5))[0] for _ in range(12)]
    b = env.reset(seed=5)[0]
    traj_b = [env.step(_full(4, 0.5))[0] for _ in range(12)]
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(traj_a, traj_b))
    assert not torch.equal(env.reset(seed=6)[0], a)


def test_missing_packages_give_install_hint(monkeypatch) -> None:
    # None in sys.modules makes `import name` raise ImportError, whether or not it is installed.
    for name in ("isaaclab", "isaaclab_tasks", "isaacgym", "isaacgymenvs"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"(?s)Isaac Lab.*pip install isaaclab.*NVIDIA GPU"):
        envs.make("isaaclab:Isaac-Ant-Direct-v0", num_envs=2)
    with pytest.raises(ImportError, match=r"(?s)isaacgym.*IsaacGymEnvs.*NVIDIA GPU"):
        envs.make("isaacgym:Ant", num_envs=2)
    # An unknown prefix is still an unknown id, not an import.
    with pytest.raises(ValueError, match="unknown environment id"):
        envs.make("isaacsim:Ant", num_envs=2)


# --------------------------------------------------------------------------- IsaacGymEnvs
def test_vectask_termination_resets_in_the_same_step() -> None:
    fake = FakeVecTask()
    env = VecTaskAdapter(fake)
    obs0, _ = env.reset(seed=0)
    assert torch.equal(fake.reset_count, torch.ones(4, dtype=torch.long))
    assert torch.all(fake.reset_buf == 0)  # so the first task.step does not reset everything again
    x0 = obs0[:, 0].clone()
    t, (obs, rew, term, trunc, extras) = _step_until_done(env, 1.0)

    # Hand computation: x_t = x0 + 0.2 t; the first t with x_t > 1 ends the episode.
    expected_t = torch.floor((1.0 - x0) / DT).long() + 1
    assert t == int(expected_t.min())
    done = expected_t == t
    assert torch.equal(term, done) and not trunc.any() and not extras["time_outs"].any()
    assert term.dtype == torch.bool
    # final_obs: the state the episode ended in (past the limit, t steps into the episode).
    final = extras["final_obs"]
    assert torch.all(final[done, 0] > 1.0)
    torch.testing.assert_close(final[done, 0], x0[done] + DT * t)
    torch.testing.assert_close(final[done, 2], torch.full((int(done.sum()),), t / 10))
    # obs: already the next episode (fresh x, zero velocity, progress 0), reset exactly once.
    assert torch.all(obs[done, 0].abs() <= 0.2) and torch.all(obs[done, 1:] == 0)
    assert torch.equal(fake.reset_count, 1 + done.long())
    # Rows of envs still running are the task's own obs.
    assert torch.equal(obs[~done], final[~done])
    # Episode stats, counted by the adapter.
    ep = extras["episode"]
    assert torch.equal(ep["env_ids"], done.nonzero().flatten())
    assert torch.equal(ep["length"], torch.full((int(done.sum()),), t))
    steps = torch.arange(1, t + 1, dtype=torch.float32)
    expected_ret = (1.0 - (x0[done, None] + DT * steps) ** 2).sum(dim=1)
    torch.testing.assert_close(ep["return"], expected_ret)

    # The next step must not reset the same envs again (IsaacGymEnvs' deferred reset).
    obs2, _, term2, _, extras2 = env.step(torch.zeros(4, 1))
    assert torch.equal(fake.reset_count, 1 + done.long())
    torch.testing.assert_close(obs2[done, 2], torch.full((int(done.sum()),), 0.1))   # 1 step into the episode
    torch.testing.assert_close(obs2[done, 0], obs[done, 0])                         # action 0: did not move


@pytest.mark.parametrize("reset_dtype", [torch.long, torch.bool], ids=["long", "bool"])
def test_vectask_time_out_is_truncation(reset_dtype) -> None:
    fake = FakeVecTask(max_episode_length=6, reset_dtype=reset_dtype)
    env = VecTaskAdapter(fake)
    obs0, _ = env.reset(seed=1)
    t, (obs, rew, term, trunc, extras) = _step_until_done(env, 0.0)
    # IsaacGymEnvs times out at progress_buf >= max_episode_length - 1.
    assert t == 5
    assert trunc.all() and not term.any() and trunc.dtype == term.dtype == torch.bool
    assert torch.equal(extras["time_outs"], trunc)
    torch.testing.assert_close(extras["final_obs"][:, 0], obs0[:, 0])   # never moved
    torch.testing.assert_close(extras["episode"]["return"], 5 * (1.0 - obs0[:, 0] ** 2))
    assert torch.equal(extras["episode"]["length"], torch.full((4,), 5))
    assert torch.equal(fake.reset_count, torch.full((4,), 2))
    assert torch.all(obs[:, 2] == 0)


def test_vectask_asymmetric_states_follow_the_reset() -> None:
    fake = FakeVecTask(num_states=1)
    env = VecTaskAdapter(fake)
    env.reset(seed=0)
    _, (obs, *_rest, extras) = _step_until_done(env, 1.0)
    states = extras["observations"]["states"]
    torch.testing.assert_close(states[:, 0], obs[:, 0] * 10.0)   # reset rows too
    assert torch.equal(extras["observations"]["obs"], obs)


def test_vectask_without_compute_observations_needs_refresh_obs() -> None:
    class Bare(FakeVecTask):
        compute_observations = None

    with pytest.raises(ValueError, match="refresh_obs"):
        VecTaskAdapter(Bare())


# --------------------------------------------------------------------------- Isaac Lab
def test_isaaclab_passes_same_step_resets_through() -> None:
    fake = FakeDirectRLEnv()
    env = IsaacLabAdapter(fake)
    obs0, extras0 = env.reset(seed=0)
    assert set(extras0["observations"]) == {"policy", "critic"}
    x0 = obs0[:, 0].clone()
    t, (obs, rew, term, trunc, extras) = _step_until_done(env, 1.0)
    done = torch.floor((1.0 - x0) / DT).long() + 1 == t
    assert torch.equal(term, done) and not trunc.any()
    # No second reset: the env already reset these, and obs is its new episode.
    assert torch.equal(fake.reset_count, 1 + done.long())
    assert torch.all(obs[done, 0].abs() <= 0.2) and torch.all(obs[done, 2] == 0)
    assert "final_obs" not in extras  # Isaac Lab does not give it (unless captured, below)
    assert "log" in extras and "observations" in extras and extras["observations"]["critic"].shape == (4, 4)
    torch.testing.assert_close(extras["episode"]["return"],
                               (1.0 - (x0[done, None] + DT * torch.arange(1, t + 1)) ** 2).sum(dim=1))
    assert "time_outs" not in fake.extras  # the adapter's extras are a copy


def test_isaaclab_fall_on_last_step_is_terminated_not_truncated() -> None:
    fake = FakeDirectRLEnv(max_episode_length=6)
    env = IsaacLabAdapter(fake)
    env.reset(seed=0)
    fake.x[:] = torch.tensor([0.0, 0.0, 0.95, 0.95])   # envs 2, 3 cross x = 1 on step 5, the time-out step
    for _ in range(4):
        out = env.step(torch.zeros(4, 1))
        assert not (out[2] | out[3]).any()
    obs, rew, term, trunc, extras = env.step(torch.tensor([[0.0], [0.0], [0.3], [0.3]]))
    assert term.tolist() == [False, False, True, True]
    assert trunc.tolist() == [True, True, False, False]
    assert torch.equal(extras["time_outs"], trunc)
    assert torch.equal(extras["episode"]["length"], torch.full((4,), 5))


def test_isaaclab_step_results_stay_valid_after_the_next_step() -> None:
    # Isaac Lab reuses its buffers; what the adapter returned must not change under the caller.
    env = IsaacLabAdapter(FakeDirectRLEnv(num_envs=2, max_episode_length=3), env_id="fake")
    env.reset(seed=0)
    _, rew1, term1, trunc1, _ = env.step(torch.zeros(2, 1))
    kept = rew1.clone(), term1.clone(), trunc1.clone()
    for _ in range(3):
        env.step(torch.full((2, 1), 30.0))             # leaves [-1, 1] at once: terminations
    assert torch.equal(rew1, kept[0]) and torch.equal(term1, kept[1]) and torch.equal(trunc1, kept[2])


def test_isaaclab_capture_final_obs_and_clip_actions() -> None:
    fake = FakeDirectRLEnv()
    env = IsaacLabAdapter(fake, capture_final_obs=True, clip_actions=1.0)
    assert env.single_action_space.high.tolist() == [1.0]
    obs0, _ = env.reset(seed=0)
    x0 = obs0[:, 0].clone()
    t, (obs, _, term, _, extras) = _step_until_done(env, 3.0)   # clipped to 1.0
    assert fake.last_actions.max().item() == 1.0
    final = extras["final_obs"]
    torch.testing.assert_close(final[term, 0], x0[term] + DT * t)
    torch.testing.assert_close(final[term, 2], torch.full((int(term.sum()),), t / 10))
    assert torch.equal(final[~term], obs[~term])
    # Steps where nothing ended carry final_obs == obs (or nothing captured at all).
    out = env.step(torch.zeros(4, 1))
    assert torch.equal(out[4].get("final_obs", out[0]), out[0])


def test_isaaclab_rejects_missing_obs_group_and_gym_wrappers_work() -> None:
    with pytest.raises(ValueError, match=r"observation group 'proprio' not found.*'critic', 'policy'"):
        IsaacLabAdapter(FakeDirectRLEnv(), obs_group="proprio")
    env = IsaacLabAdapter(FakeDirectRLEnv(), obs_group="critic")
    assert env.num_obs == 4 and env.reset(seed=0)[0].shape == (4, 4)
    # What gym.make returns: the env inside gymnasium wrappers.
    wrapped = gym.wrappers.OrderEnforcing(FakeDirectRLEnv())
    env = IsaacLabAdapter(wrapped, env_id="wrapped")
    env.reset(seed=0)
    assert env.step(torch.zeros(4, 1))[0].shape == (4, 3)


# --------------------------------------------------------------------------- training
TINY_PPO = {"num_steps_per_env": 16, "num_learning_epochs": 2, "num_mini_batches": 2,
            "actor_hidden": (16, 16), "critic_hidden": (16, 16), "schedule": "constant", "learning_rate": 3e-3}


@pytest.mark.parametrize("kind", ["vectask", "isaaclab"])
def test_ppo_trains_through_the_adapter(kind) -> None:
    from rlcourse.algos import PPO
    from rlcourse.runner import Runner

    def make(num_envs: int) -> VecEnv:
        if kind == "vectask":
            return VecTaskAdapter(FakeVecTask(num_envs=num_envs))
        return IsaacLabAdapter(FakeDirectRLEnv(num_envs=num_envs))

    env = make(8)
    agent = PPO(env, seed=0, preset=None, **TINY_PPO)
    params = [p.detach().clone() for p in agent.actor_critic.parameters()]
    metrics = Runner(agent, env, progress=False, eval_env=make(4), eval_episodes=4).learn(3 * 16 * 8)
    assert agent.global_step == 3 * 16 * 8 and agent.iteration == 3
    assert np.isfinite(metrics["train_episode_return_mean"])   # episodes ended and were counted
    # evaluate() ran full episodes through the adapter: at most 9 steps with reward <= 1 each.
    assert metrics["episodes"] == 4 and 0 < metrics["episode_length_mean"] <= 9
    assert metrics["episode_return_mean"] <= 9
    assert any(not torch.equal(a, b.detach()) for a, b in zip(params, agent.actor_critic.parameters()))
    action = agent.predict(env.reset(seed=1)[0])
    assert action.shape == (8, 1) and torch.isfinite(action).all()
