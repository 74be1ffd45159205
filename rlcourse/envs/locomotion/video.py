"""Record a policy in a locomotion env to an animated GIF or MP4 and show it in a notebook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


@torch.no_grad()
def record_video(
    env: Any,
    policy: Callable[[torch.Tensor], torch.Tensor] | Any,
    path: str | os.PathLike,
    steps: int = 200,
    env_id: int = 0,
    width: int = 320,
    height: int = 240,
    every: int = 1,
    seed: int | None = None,
) -> Path:
    """Run ``policy`` for ``steps`` control steps and write env ``env_id``'s frames to ``path``.

    ``.gif`` is written with Pillow (always available with matplotlib); ``.mp4`` needs
    ``imageio`` with ``imageio-ffmpeg``. Frames play back at real time (``1 / (step_dt * every)`` fps).

    Args:
        env: a locomotion env with ``render()`` (it is reset first).
        policy: an rlcourse agent (its deterministic policy is used) or ``obs -> actions``.
        path: output file, ``.gif`` or ``.mp4``.
        steps: control steps to run.
        every: keep one frame out of ``every``.
    """
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"video path must end in .gif or .mp4, got {path.name!r}")
    if hasattr(policy, "inference_policy"):
        policy = policy.inference_policy()
    obs, _ = env.reset(seed=seed)
    frames = [env.render(env_id, width, height)]
    for t in range(steps):
        obs, *_ = env.step(policy(obs.to(torch.float32)))
        if (t + 1) % every == 0:
            frames.append(env.render(env_id, width, height))
    fps = 1.0 / (env.step_dt * every)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(np.asarray(f)) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    else:
        try:
            import imageio.v2 as imageio
        except ImportError as exc:
            raise RuntimeError("writing .mp4 needs `pip install imageio imageio-ffmpeg`; use a .gif path instead") from exc
        imageio.mimsave(path, frames, fps=fps)
    return path


def show_video(path: str | os.PathLike, width: int = 480) -> Any:
    """Display a recorded GIF/MP4 inline in Jupyter (returns the IPython display object)."""
    import base64

    from IPython.display import HTML, Image

    path = Path(path)
    if path.suffix.lower() == ".gif":
        return Image(data=path.read_bytes(), format="gif", width=width)
    data = base64.b64encode(path.read_bytes()).decode()
    return HTML(f'<video width="{width}" controls autoplay loop><source src="data:video/mp4;base64,{data}" type="video/mp4"></video>')
