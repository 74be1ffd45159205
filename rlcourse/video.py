"""Record a policy to a GIF or MP4 file and show it inline in a notebook.

Works with every env that renders: the locomotion tasks (pick the env of a batch and the
frame size) and gymnasium ids (made with ``render_mode="rgb_array"``)::

    from rlcourse.video import record_video, show_video
    path = record_video(agent, env, "ant.gif", steps=100, every=4, width=240, height=180)
    path = record_video(agent, "CartPole-v1", "cartpole.mp4", episodes=2, seed=0)
    show_video(path)
"""

from __future__ import annotations

import base64
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlcourse import envs
from rlcourse.evaluation import as_policy

DEFAULT_FPS = 30.0
"""Playback rate for envs without a control step length (``step_dt``), e.g. gymnasium ids."""


def _make_render_env(env_id: str, seed: int | None) -> envs.VecEnv:
    try:
        return envs.make(env_id, num_envs=1, seed=seed, render_mode="rgb_array")
    except TypeError:  # native tasks render without a render_mode argument
        return envs.make(env_id, num_envs=1, seed=seed)


def _frame_renderer(env: Any, env_index: int, width: int | None, height: int | None) -> Any:
    """``() -> (H, W, 3) uint8`` frame of env ``env_index`` (at ``width x height`` if given)."""
    kwargs = {key: value for key, value in (("env_id", env_index), ("width", width), ("height", height))
              if value is not None and (key != "env_id" or value != 0)}
    if kwargs:
        params = inspect.signature(env.render).parameters
        missing = [key for key in kwargs if key not in params]
        if missing:
            asked = ", ".join("env_index" if key == "env_id" else key for key in missing)
            raise ValueError(f"{type(env).__name__}.render() renders env 0 at its own size: leave out {asked}")
    return lambda: np.asarray(env.render(**kwargs), dtype=np.uint8)


def _write(frames: list[np.ndarray], path: Path, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image   # Pillow comes with matplotlib

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
        return
    try:
        import imageio.v2 as imageio
    except ImportError as exc:
        raise RuntimeError("writing .mp4 needs `pip install imageio imageio-ffmpeg` (rlcourse[video]); "
                           "use a .gif path instead") from exc
    # macro_block_size=1: keep any frame size (H.264 would otherwise round it up to a multiple of 16).
    imageio.mimsave(path, frames, fps=fps, macro_block_size=1)


@torch.no_grad()
def record_video(
    policy: Any,
    env: envs.VecEnv | str,
    path: str | os.PathLike,
    *,
    episodes: int | None = None,
    steps: int | None = None,
    every: int = 1,
    env_index: int = 0,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    seed: int | None = None,
    max_frames: int = 3000,
) -> Path:
    """Run ``policy`` on ``env`` and write the frames of env ``env_index`` to ``path``.

    Recording stops after ``steps`` control steps, or when env ``env_index`` has finished
    ``episodes`` episodes, whichever comes first (neither given: one episode), and at
    ``max_frames`` frames at the latest. The first frame is the reset state.

    The format follows the suffix: ``.gif`` (Pillow) or ``.mp4`` (H.264 through the ffmpeg
    binary of ``imageio-ffmpeg``, ``pip install rlcourse[video]``).

    Args:
        policy: an rlcourse agent (its deterministic policy is used), an exported
            TorchScript policy or any callable ``obs -> actions``.
        env: a batched env that renders (it is reset first and left open), or an env id:
            one copy is made (gymnasium ids with ``render_mode="rgb_array"``) and closed after.
        path: output file, ``.gif`` or ``.mp4``.
        episodes: stop when env ``env_index`` has finished this many episodes.
        steps: stop after this many control steps.
        every: keep one frame out of ``every`` control steps.
        env_index: which env of the batch to film.
        width, height: frame size, for envs whose ``render`` takes one (the locomotion
            tasks); default: the env's own.
        fps: playback rate; default real time (``1 / (env.step_dt * every)``) for envs with a
            ``step_dt``, else ``DEFAULT_FPS / every``.
        seed: reset seed (``None`` keeps the env's own); also seeds the env made from an id.
        max_frames: safety limit on the frames kept.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a suffix other than ``.gif``/``.mp4``, ``every``, ``steps`` or ``episodes``
            below 1, or ``env_index``/``width``/``height`` for an env whose ``render`` does
            not take them.
        RuntimeError: an ``.mp4`` without imageio.
    """
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"video path must end in .gif or .mp4, got {path.name!r}")
    for name, value in (("every", every), ("steps", steps), ("episodes", episodes)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if steps is None and episodes is None:
        episodes = 1
    made = isinstance(env, str)
    vec_env = _make_render_env(env, seed) if made else env
    try:
        render = _frame_renderer(vec_env, env_index, width, height)
        act = as_policy(policy, vec_env)
        obs, _ = vec_env.reset(seed=seed)
        frames = [render()]
        t = finished = 0
        while len(frames) < max_frames and (steps is None or t < steps) and (episodes is None or finished < episodes):
            obs, _, _, _, extras = vec_env.step(act(obs))
            t += 1
            if t % every == 0:
                frames.append(render())
            ep = extras.get("episode")
            if ep is not None:
                finished += int((ep["env_ids"] == env_index).sum())
        if fps is None:
            step_dt = getattr(vec_env, "step_dt", None)
            fps = 1.0 / (step_dt * every) if step_dt else DEFAULT_FPS / every
    finally:
        if made:
            vec_env.close()
    _write(frames, path, fps)
    return path


def show_video(path: str | os.PathLike, width: int = 480) -> Any:
    """Display a recorded GIF/MP4 inline in Jupyter, embedded so it survives in a saved notebook
    (returns the IPython display object)."""
    from IPython.display import HTML, Image

    path = Path(path)
    if path.suffix.lower() == ".gif":
        return Image(data=path.read_bytes(), format="gif", width=width)
    data = base64.b64encode(path.read_bytes()).decode()
    return HTML(f'<video width="{width}" controls autoplay loop muted>'
                f'<source src="data:video/mp4;base64,{data}" type="video/mp4"></video>')


__all__ = ["DEFAULT_FPS", "record_video", "show_video"]
