"""``rlcourse.video``: recording from an env id (what ``rlcourse eval --video`` does) and showing the file.

The locomotion side (a batched env, frame size, env index) is tested with the other
offscreen-rendering checks in ``test_locomotion_adapters.py``.
"""

from __future__ import annotations

import pytest
import torch

from rlcourse import envs, evaluate
from rlcourse.video import DEFAULT_FPS, record_video, show_video

pytest.importorskip("pygame", reason="CartPole renders with pygame (pip install rlcourse[video])")


def push_left(obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[0], dtype=torch.long)


def test_one_episode_of_a_gymnasium_id_to_gif(tmp_path) -> None:
    from PIL import Image, ImageSequence

    env = envs.make("CartPole-v1", num_envs=1, seed=0)
    length = int(evaluate(push_left, env, episodes=1, seed=0)["episode_length_mean"])
    env.close()
    path = record_video(push_left, "CartPole-v1", tmp_path / "run" / "cartpole.gif", episodes=1, seed=0)
    with Image.open(path) as gif:
        assert gif.size == (600, 400)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    # GIF times are in 10 ms steps, and Pillow merges identical frames into one longer frame.
    frame_ms = durations[-1]
    assert abs(frame_ms - 1000 / DEFAULT_FPS) < 10
    # The reset frame, then one per step (the last shows the next episode's first state: same-step reset).
    assert sum(durations) == (length + 1) * frame_ms


def test_steps_every_and_fps_to_mp4(tmp_path) -> None:
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    env = envs.make("CartPole-v1", num_envs=1, seed=0, render_mode="rgb_array")
    path = record_video(push_left, env, tmp_path / "cartpole.mp4", steps=4, every=2, fps=10, seed=0)
    env.step(push_left(torch.zeros(1, 4)))   # the env is left open for the caller
    env.close()
    with imageio.get_reader(path) as reader:
        assert reader.count_frames() == 3
        assert reader.get_meta_data()["fps"] == 10


def test_bad_arguments_raise_before_anything_runs(tmp_path) -> None:
    with pytest.raises(ValueError, match="must end in .gif or .mp4"):
        record_video(push_left, "CartPole-v1", tmp_path / "cartpole.avi")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        record_video(push_left, "CartPole-v1", tmp_path / "cartpole.gif", steps=0)
    with pytest.raises(ValueError, match="leave out width, height"):
        record_video(push_left, "CartPole-v1", tmp_path / "cartpole.gif", width=64, height=48)
    with pytest.raises(ValueError, match="leave out env_index"):
        record_video(push_left, "CartPole-v1", tmp_path / "cartpole.gif", env_index=1)
    assert not list(tmp_path.iterdir())


def test_show_video_embeds_the_file(tmp_path) -> None:
    pytest.importorskip("IPython")
    gif = record_video(push_left, "CartPole-v1", tmp_path / "cartpole.gif", steps=2, seed=0)
    shown = show_video(gif, width=200)
    assert shown.data == gif.read_bytes() and shown.width == 200
    mp4 = tmp_path / "fake.mp4"
    mp4.write_bytes(b"\x00\x01")
    html = show_video(mp4, width=200).data
    assert 'src="data:video/mp4;base64,AAE="' in html and 'width="200"' in html
