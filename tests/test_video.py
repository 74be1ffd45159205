"""``rlcourse.video``: recording from an env id (what ``rlcourse eval --video`` does), clips
(labels, side by side, H.264 in memory) and showing them within the size budget.

The locomotion side (a batched env, frame size, env index, several envs in one picture) is
tested with the other offscreen-rendering checks in ``test_locomotion_adapters.py``; that every
lecture's videos keep to the budget, in ``test_course_notebooks.py``.
"""

from __future__ import annotations

import base64

import pytest
import torch

from rlcourse import envs, evaluate
import numpy as np

from rlcourse.video import (DEFAULT_FPS, VIDEO_BUDGET_BYTES, Clip, record_clip, record_video, show_video,
                           side_by_side)

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
    # Plays inline (browsers autoplay only muted videos) and fits the page.
    for attribute in ("controls", "autoplay", "loop", "muted", "playsinline", "max-width: 100%"):
        assert attribute in html, attribute


def test_record_clip_start_every_and_episode_stats() -> None:
    env = envs.make("CartPole-v1", num_envs=1, seed=0, render_mode="rgb_array")
    clip = record_clip(push_left, env, steps=7, start=3, every=2, seed=0)
    assert len(clip.frames) == 1 + (7 - 3) // 2 and clip.fps == DEFAULT_FPS / 2
    assert clip.frames[0].shape == (400, 600, 3) and clip.episodes == []
    # Pushing left ends CartPole's first episode after a few steps: its statistics are kept.
    clip = record_clip(push_left, env, episodes=1, seed=0)
    env.close()
    (episode,) = clip.episodes
    assert episode["env_id"] == 0 and episode["length"] == len(clip.frames) - 1 and episode["return"] > 0
    with pytest.raises(ValueError, match="start must lie in"):
        record_clip(push_left, "CartPole-v1", steps=3, start=3)


def frames_of(color: tuple[int, int, int], n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [np.full((h, w, 3), color, dtype=np.uint8) for _ in range(n)]


def test_clips_labelled_and_side_by_side() -> None:
    red, blue = Clip(frames_of((200, 0, 0), 3), fps=10), Clip(frames_of((0, 0, 200), 5), fps=10)
    label = red.labelled("before")
    assert len(label.frames) == 3 and label.frames[0].shape == (48, 64, 3)
    assert (label.frames[0][:4] != red.frames[0][:4]).any(), "no label band at the top"
    assert (label.frames[0][-4:] == red.frames[0][-4:]).all(), "the label covers more than the top"
    both = side_by_side(red, blue)
    assert both.frames[0].shape == (48, 128, 3) and len(both.frames) == 5 and both.duration == 0.5
    assert (both.frames[4][:, :64] == red.frames[2]).all(), "the shorter clip holds its last frame"
    grid = side_by_side(red, blue, red, columns=2)
    assert grid.frames[0].shape == (96, 128, 3) and (grid.frames[0][48:, 64:] == 0).all()
    with pytest.raises(ValueError, match="one frame size"):
        side_by_side(red, Clip(frames_of((0, 0, 0), 2, h=50), fps=10))
    with pytest.raises(ValueError, match="one frame rate"):
        side_by_side(red, Clip(frames_of((0, 0, 0), 2), fps=20))
    with pytest.raises(ValueError, match="one size"):
        Clip([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)], fps=10)


def test_clip_to_mp4_in_memory_and_shown_within_the_budget(tmp_path) -> None:
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    rng = np.random.default_rng(0)
    # An odd frame size (H.264 in yuv420p needs even ones) is padded by one row/column.
    clip = Clip([rng.integers(0, 255, (45, 63, 3), dtype=np.uint8) for _ in range(6)], fps=12)
    data = clip.mp4()
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    with imageio.get_reader(path) as reader:
        assert reader.count_frames() == 6 and reader.get_meta_data()["fps"] == 12
        assert reader.get_meta_data()["size"] == (64, 46)
    html = show_video(clip).data
    assert html.count('<video src="data:video/mp4;base64,') == 1 and "width=" not in html
    # Over the budget: refused, with what to do about it; max_bytes=None lifts the limit.
    with pytest.raises(ValueError, match=f"{len(data):,} bytes is over the budget of {len(data) - 1:,} bytes per video"):
        show_video(clip, max_bytes=len(data) - 1)
    with pytest.raises(ValueError, match="fewer steps"):
        show_video(path, max_bytes=100)
    assert base64.b64encode(data).decode() in show_video(path, max_bytes=None).data
    assert 10_000 <= VIDEO_BUDGET_BYTES <= 1_000_000
