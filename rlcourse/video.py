"""Record a policy to an mp4/gif file and show it inline in a notebook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def _make_render_env(env_id: str, seed: int) -> Any:
    from rlcourse import envs

    try:
        return envs.make(env_id, num_envs=1, seed=seed, render_mode="rgb_array")
    except TypeError:  # native tasks render without a render_mode argument
        return envs.make(env_id, num_envs=1, seed=seed)


@torch.no_grad()
def record_video(
    policy: Callable[[torch.Tensor], torch.Tensor],
    env_id: str,
    path: str | os.PathLike,
    episodes: int = 1,
    seed: int = 0,
    fps: int = 30,
    max_frames: int = 3000,
) -> Path:
    """Run ``policy`` for ``episodes`` episodes on one copy of ``env_id`` and write the frames.

    The format follows the suffix: ``.mp4`` (H.264 through the ffmpeg binary shipped by
    ``imageio-ffmpeg``) or ``.gif``. Raises ``RuntimeError`` if the env cannot render.
    """
    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"video path must end in .mp4 or .gif, got {path.name!r}")
    env = _make_render_env(env_id, seed)
    frames: list[np.ndarray] = []
    try:
        obs, _ = env.reset(seed=seed)
        done_episodes = 0
        frames.append(np.asarray(env.render()))
        while done_episodes < episodes and len(frames) < max_frames:
            obs, _, _, _, extras = env.step(policy(obs.to(torch.float32)))
            frames.append(np.asarray(env.render()))
            if "episode" in extras:
                done_episodes += len(extras["episode"]["return"])
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    return path


def show_video(path: str | os.PathLike, width: int = 480) -> Any:
    """Display an mp4/gif inline in Jupyter (embedded, so it survives in saved notebooks)."""
    from IPython.display import Image, Video

    path = Path(path)
    if path.suffix.lower() == ".gif":
        return Image(filename=str(path), width=width)
    return Video(str(path), embed=True, width=width)
