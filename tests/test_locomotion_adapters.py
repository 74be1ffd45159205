"""NumPy adapters (gymnasium VectorEnv, Stable-Baselines3 VecEnv) and offscreen rendering."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest
import torch

from rlcourse.envs import make
from rlcourse.envs.locomotion.vector import GymnasiumVectorEnv, to_sb3


def test_gymnasium_vector_env_same_step_autoreset():
    venv = GymnasiumVectorEnv(make("Ant", num_envs=3, seed=0, episode_length=4))
    assert venv.metadata["autoreset_mode"].name == "SAME_STEP"
    assert venv.observation_space.shape == (3, 36) and venv.action_space.shape == (3, 8)
    obs, info = venv.reset(seed=1)
    assert isinstance(obs, np.ndarray) and obs.shape == (3, 36) and obs.dtype == np.float32
    for t in range(4):
        obs, rew, term, trunc, infos = venv.step(np.zeros((3, 8), dtype=np.float32))
    assert trunc.all() and not term.any() and isinstance(rew, np.ndarray)
    assert infos["_final_obs"].all() and infos["final_obs"].shape == (3, 36)
    np.testing.assert_allclose(obs[:, 0], 0.55, atol=1e-6)        # already the next episode
    assert infos["episode"]["length"].tolist() == [4, 4, 4] and infos["_episode"].all()
    assert infos["episode"]["l"].tolist() == [4, 4, 4] and infos["episode"]["r"].shape == (3,)


def test_gymnasium_vector_env_episode_stats_are_per_env_with_a_mask():
    # Env 1 is knocked over so its episode ends before the others (gymnasium's layout: arrays
    # of num_envs entries, valid where infos["_episode"] is true).
    env = make("Ant", num_envs=3, seed=0)
    venv = GymnasiumVectorEnv(env)
    venv.reset(seed=0)
    env.sim.qpos[1, 2], env.sim.qpos[1, 3:7] = 0.3, [0.0, 1.0, 0.0, 0.0]   # upside down: falls below 0.31 m
    for t in range(1, 30):
        _, _, term, _, infos = venv.step(np.zeros((3, 8), dtype=np.float32))
        if term.any():
            break
    assert term.tolist() == [False, True, False]
    assert infos["_episode"].tolist() == [False, True, False]
    assert infos["episode"]["l"].tolist() == [0, t, 0] and infos["episode"]["r"][[0, 2]].tolist() == [0.0, 0.0]
    assert set(infos["episode"]) >= {"r", "l", "return", "length", "x_distance"}


def test_sb3_vecenv_matches_our_semantics_and_trains():
    import stable_baselines3 as sb3          # a dev dependency: missing it is a failure, not a skip
    from stable_baselines3.common.logger import Logger
    venv = to_sb3(make("Ant", num_envs=2, seed=0, episode_length=5))
    twin = make("Ant", num_envs=2, seed=0, episode_length=5)   # the same env, stepped directly
    obs = venv.reset()
    twin.reset()
    assert obs.shape == (2, 36)
    for t in range(5):
        obs, rew, done, infos = venv.step(np.zeros((2, 8), dtype=np.float32))
        twin_obs, twin_rew, *_, extras = twin.step(torch.zeros(2, 8))
        np.testing.assert_array_equal(rew, twin_rew.numpy())
    assert done.all()
    np.testing.assert_array_equal(obs, twin_obs.numpy())                  # already the next episode
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True and info["episode"]["l"] == 5
        np.testing.assert_array_equal(info["terminal_observation"], extras["final_obs"][i].numpy())
        assert not np.allclose(info["terminal_observation"], obs[i])
    model = sb3.PPO("MlpPolicy", to_sb3(make("Ant", num_envs=4, seed=0)), n_steps=16, batch_size=32,
                    n_epochs=1, seed=0, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))   # no empty /tmp/SB3-<date> folder
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2, 8)


def _gl_library_present() -> bool:
    return any(ctypes.util.find_library(name) for name in ("EGL", "OSMesa", "GL"))


@pytest.mark.skipif(not _gl_library_present(), reason="no OpenGL library (libEGL/libOSMesa/libGL) on this machine")
def test_render_and_record_a_gif(tmp_path):
    from rlcourse.video import record_video

    env = make("Ant", num_envs=2, seed=0)
    env.reset()
    frame = env.render(width=160, height=120)
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8 and frame.std() > 10
    with pytest.raises(ValueError, match="env_id"):
        env.render(env_id=5)
    path = record_video(lambda obs: torch.ones(obs.shape[0], 8), env, tmp_path / "ant.gif", steps=6, width=96, height=72)
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.n_frames == 7 and gif.size == (96, 72)
    with pytest.raises(ValueError, match=".gif or .mp4"):
        record_video(lambda obs: obs, env, tmp_path / "ant.avi", steps=1)


@pytest.mark.skipif(not _gl_library_present(), reason="no OpenGL library (libEGL/libOSMesa/libGL) on this machine")
def test_several_envs_of_a_batch_in_one_picture():
    from rlcourse.video import record_clip

    env = make("Quadruped", num_envs=6, seed=0)
    env.reset()
    one = env.render(0, width=160, height=120)
    grid = env.render([0, 1, 2, 3], width=160, height=120)
    assert grid.shape == (120, 160, 3) and grid.dtype == np.uint8 and not np.array_equal(one, grid)
    # Only the robots are repeated (the floor once), each shifted to its place on the grid:
    # more of the picture differs from the empty floor than with one robot at the centre.
    floor = np.median(grid.reshape(-1, 3), axis=0)
    assert (np.abs(grid.astype(int) - floor).sum(axis=2) > 60).mean() > 0.02
    with pytest.raises(ValueError, match="env_id must lie in"):
        env.render([0, 6])
    # record_clip films a list of envs together; an episode of any of them counts.
    gen = torch.Generator().manual_seed(0)
    clip = record_clip(lambda obs: torch.rand(obs.shape[0], 12, generator=gen) * 2 - 1, env,
                       env_index=range(4), steps=4, every=2, width=96, height=72, seed=0)
    env.close()
    assert len(clip.frames) == 3 and clip.frames[0].shape == (72, 96, 3)
    assert clip.fps == pytest.approx(1 / (0.02 * 2))
