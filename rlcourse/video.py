"""Record a policy to a video, compose clips, and show them inline in a notebook.

Works with every env that renders: the locomotion tasks (pick the env of a batch, or several
of them drawn side by side, and the frame size) and gymnasium ids (made with
``render_mode="rgb_array"``)::

    from rlcourse.video import record_video, record_clip, side_by_side, show_video
    path = record_video(agent, env, "ant.mp4", steps=100, every=2, width=320, height=240)
    path = record_video(agent, "CartPole-v1", "cartpole.gif", episodes=2, seed=0)
    show_video(path)

    # In a lecture: two policies side by side, labelled, embedded in the notebook as H.264.
    before = record_clip(untrained, env, steps=160, every=2, width=320, height=240, seed=0)
    after = record_clip(walker, env, steps=160, every=2, width=320, height=240, seed=0)
    show_video(side_by_side(before.labelled("before"), after.labelled("after")))

:func:`show_video` embeds the file in the notebook's output (a ``data:`` URI), so the video
plays in JupyterLab, in a saved notebook and on the course site (opened from disk or served),
and it refuses a video above :data:`VIDEO_BUDGET_BYTES` (the README's size budget).
"""

from __future__ import annotations

import base64
import inspect
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rlcourse import envs
from rlcourse.evaluation import as_policy

DEFAULT_FPS = 30.0
"""Playback rate for envs without a control step length (``step_dt``), e.g. gymnasium ids."""

VIDEO_BUDGET_BYTES = 300_000
"""Largest video file (bytes) :func:`show_video` embeds in a notebook: the size budget per video
of the README. Embedded as base64, a video adds 4/3 of its size to the notebook and the page."""

MP4_CRF = 32
"""H.264 constant rate factor of the MP4s written here (0 lossless .. 51 worst; ffmpeg's default
is 23). 32 keeps 8 s of two 320x240 views of the Ant near 200 kB, sharp enough to see a gait."""

VIDEO_ATTRIBUTES = 'controls autoplay loop muted playsinline style="max-width: 100%; height: auto"'
"""HTML attributes of an embedded video: browsers autoplay only muted videos."""


@dataclass
class Clip:
    """Frames of a recorded run, ready to be labelled, put side by side, saved or shown.

    Attributes:
        frames: RGB frames ``(H, W, 3)`` uint8, all of one size.
        fps: playback rate (frames per second).
        episodes: statistics of the episodes the filmed env(s) finished while filmed, one dict
            each (``return``, ``length``, ``env_id``, and what the env reports, e.g. the
            locomotion tasks' ``x_distance`` and per-term sums ``rew_<term>``).
    """

    frames: list[np.ndarray]
    fps: float
    episodes: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("a clip needs at least one frame")
        shapes = {np.shape(f) for f in self.frames}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
            raise ValueError(f"frames must all be (H, W, 3) of one size, got shapes {sorted(shapes)}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def duration(self) -> float:
        """Playing time in seconds."""
        return len(self.frames) / self.fps

    def labelled(self, text: str) -> "Clip":
        """A copy with ``text`` written on a dark band across the top of every frame."""
        from PIL import Image, ImageDraw

        size = min(16, max(10, self.height // 16))
        font, band = _font(size), size + 8
        frames = []
        for frame in self.frames:
            image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGBA")
            overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
            draw = ImageDraw.Draw(overlay)
            draw.rectangle((0, 0, image.width, band), fill=(0, 0, 0, 150))
            draw.text((5, band // 2), text, fill=(255, 255, 255, 255), font=font, anchor="lm")
            frames.append(np.asarray(Image.alpha_composite(image, overlay).convert("RGB")))
        return Clip(frames, self.fps, [dict(e) for e in self.episodes])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the clip to ``path``: ``.mp4`` (H.264, needs ``imageio-ffmpeg``) or ``.gif``."""
        path = Path(path)
        if path.suffix.lower() not in (".gif", ".mp4"):
            raise ValueError(f"video path must end in .gif or .mp4, got {path.name!r}")
        _write(self.frames, path, self.fps)
        return path

    def mp4(self) -> bytes:
        """The clip encoded as an H.264 MP4 file, in memory."""
        with tempfile.TemporaryDirectory(prefix="rlcourse_video_") as tmp:
            return self.save(Path(tmp) / "clip.mp4").read_bytes()


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)   # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:                              # older Pillow: the small bitmap font
        return ImageFont.load_default()


def side_by_side(*clips: Clip, columns: int | None = None) -> Clip:
    """One clip showing ``clips`` on a grid (left to right, then top to bottom; one row by default).

    All clips need the same frame size and rate; a shorter clip holds its last frame until the
    longest one ends. The result's ``episodes`` are those of all clips, in order.
    """
    if not clips:
        raise ValueError("side_by_side needs at least one clip")
    sizes = {(c.height, c.width) for c in clips}
    if len(sizes) != 1:
        raise ValueError(f"clips must have one frame size to go side by side, got {sorted(sizes)}")
    rates = {round(c.fps, 6) for c in clips}
    if len(rates) != 1:
        raise ValueError(f"clips must have one frame rate to go side by side, got {sorted(rates)}")
    columns = len(clips) if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    rows = -(-len(clips) // columns)
    (h, w), length = sizes.pop(), max(len(c.frames) for c in clips)
    frames = []
    for t in range(length):
        canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
        for k, clip in enumerate(clips):
            r, c = divmod(k, columns)
            canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = clip.frames[min(t, len(clip.frames) - 1)]
        frames.append(canvas)
    return Clip(frames, clips[0].fps, [e for c in clips for e in c.episodes])


def _make_render_env(env_id: str, seed: int | None) -> envs.VecEnv:
    try:
        return envs.make(env_id, num_envs=1, seed=seed, render_mode="rgb_array")
    except TypeError:  # native tasks render without a render_mode argument
        return envs.make(env_id, num_envs=1, seed=seed)


def _frame_renderer(env: Any, env_index: int | Sequence[int], width: int | None, height: int | None) -> Any:
    """``() -> (H, W, 3) uint8`` frame of env ``env_index`` (or several, side by side in one
    picture) at ``width x height`` if given."""
    single = isinstance(env_index, (int, np.integer))
    kwargs = {key: value for key, value in (("env_id", env_index), ("width", width), ("height", height))
              if value is not None and (key != "env_id" or not single or value != 0)}
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
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:   # H.264 in yuv420p (what every browser plays) needs even sizes: repeat the last row/column
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
    # macro_block_size=1: keep any frame size (H.264 would otherwise round it up to a multiple of 16).
    # yuv420p and +faststart: plays in every browser, and starts before the whole file is loaded.
    imageio.mimsave(path, frames, fps=fps, macro_block_size=1, quality=None, pixelformat="yuv420p",
                    output_params=["-crf", str(MP4_CRF), "-preset", "slow", "-movflags", "+faststart"])


@torch.no_grad()
def record_clip(
    policy: Any,
    env: envs.VecEnv | str,
    *,
    episodes: int | None = None,
    steps: int | None = None,
    start: int = 0,
    every: int = 1,
    env_index: int | Sequence[int] = 0,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    seed: int | None = None,
    max_frames: int = 3000,
) -> Clip:
    """Run ``policy`` on ``env`` and keep the frames of env ``env_index`` as a :class:`Clip`.

    The env is reset, then runs ``start`` control steps unfilmed; filming begins there (the
    first frame is that state, the reset state for ``start=0``). It stops after ``steps``
    control steps in all (``start`` included), or when env ``env_index`` has finished
    ``episodes`` episodes while filmed, whichever comes first (neither given: one episode),
    and at ``max_frames`` frames at the latest.

    Args:
        policy: an rlcourse agent (its deterministic policy is used), an exported
            TorchScript policy or any callable ``obs -> actions``.
        env: a batched env that renders (it is reset first and left open), or an env id:
            one copy is made (gymnasium ids with ``render_mode="rgb_array"``) and closed after.
        episodes: stop when env ``env_index`` has finished this many episodes.
        steps: stop after this many control steps.
        start: control steps run before the first frame.
        every: keep one frame out of ``every`` control steps.
        env_index: which env of the batch to film; a list of envs (locomotion tasks) films
            them side by side in one picture, and ``episodes`` counts theirs together.
        width, height: frame size, for envs whose ``render`` takes one (the locomotion
            tasks); default: the env's own.
        fps: playback rate; default real time (``1 / (env.step_dt * every)``) for envs with a
            ``step_dt``, else ``DEFAULT_FPS / every``.
        seed: reset seed (``None`` keeps the env's own); also seeds the env made from an id.
        max_frames: safety limit on the frames kept.

    Raises:
        ValueError: ``every``, ``steps`` or ``episodes`` below 1, ``start`` below 0 or not below
            ``steps``, or ``env_index``/``width``/``height`` for an env whose ``render`` does
            not take them.
    """
    for name, value in (("every", every), ("steps", steps), ("episodes", episodes)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if start < 0 or (steps is not None and start >= steps):
        raise ValueError(f"start must lie in [0, steps), got start={start}, steps={steps}")
    if steps is None and episodes is None:
        episodes = 1
    filmed = {int(env_index)} if isinstance(env_index, (int, np.integer)) else {int(i) for i in env_index}
    made = isinstance(env, str)
    vec_env = _make_render_env(env, seed) if made else env
    try:
        render = _frame_renderer(vec_env, env_index, width, height)
        act = as_policy(policy, vec_env)
        obs, _ = vec_env.reset(seed=seed)
        for _ in range(start):
            obs, *_ = vec_env.step(act(obs))
        frames = [render()]
        finished: list[dict[str, float]] = []
        t = start
        while (len(frames) < max_frames and (steps is None or t < steps)
               and (episodes is None or len(finished) < episodes)):
            obs, _, _, _, extras = vec_env.step(act(obs))
            t += 1
            if (t - start) % every == 0:
                frames.append(render())
            finished.extend(_filmed_episodes(extras.get("episode"), filmed))
        if fps is None:
            step_dt = getattr(vec_env, "step_dt", None)
            fps = 1.0 / (step_dt * every) if step_dt else DEFAULT_FPS / every
    finally:
        if made:
            vec_env.close()
    return Clip(frames, float(fps), finished)


def _filmed_episodes(episode: dict[str, Any] | None, filmed: set[int]) -> list[dict[str, float]]:
    """One dict of plain numbers per episode of a filmed env in ``extras["episode"]``."""
    if episode is None:
        return []
    env_ids = [int(i) for i in torch.as_tensor(episode["env_ids"]).reshape(-1)]
    rows = []
    for row, env_id in enumerate(env_ids):
        if env_id in filmed:
            stats = {"env_id": float(env_id)}
            for key, value in episode.items():
                value = torch.as_tensor(value).reshape(-1)
                if key != "env_ids" and len(value) == len(env_ids):
                    stats[key] = float(value[row])
            rows.append(stats)
    return rows


def record_video(
    policy: Any,
    env: envs.VecEnv | str,
    path: str | os.PathLike,
    **kwargs: Any,
) -> Path:
    """Run ``policy`` on ``env`` and write the frames of env ``env_index`` to ``path``.

    Takes the keyword arguments of :func:`record_clip` (``episodes``, ``steps``, ``start``,
    ``every``, ``env_index``, ``width``, ``height``, ``fps``, ``seed``, ``max_frames``).
    The format follows the suffix: ``.gif`` (Pillow) or ``.mp4`` (H.264 through the ffmpeg
    binary of ``imageio-ffmpeg``, ``pip install rlcourse[video]``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a suffix other than ``.gif``/``.mp4`` (before anything runs), or what
            :func:`record_clip` raises.
        RuntimeError: an ``.mp4`` without imageio.
    """
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"video path must end in .gif or .mp4, got {path.name!r}")
    return record_clip(policy, env, **kwargs).save(path)


def show_video(video: str | os.PathLike | Clip, width: int | None = None,
               max_bytes: int | None = VIDEO_BUDGET_BYTES) -> Any:
    """Display a clip or a recorded GIF/MP4 inline in Jupyter, embedded so that it survives in a
    saved notebook and on the course site (returns the IPython display object).

    A :class:`Clip` is encoded as an H.264 MP4. An MP4 becomes an HTML5 ``<video>`` (controls,
    looping, muted autoplay) whose source is a ``data:`` URI: no file to copy, so it plays in
    JupyterLab (also reopened from disk, untrusted), on the course site from ``file://`` and over
    http alike, and in the reveal.js slides. ``width`` sets the displayed width in pixels (default:
    the video's own, shrunk to fit the page).

    Raises:
        ValueError: the file is larger than ``max_bytes`` (default :data:`VIDEO_BUDGET_BYTES`,
            the README's budget per video; ``None``: no limit), or not a .gif/.mp4.
    """
    from IPython.display import HTML, Image

    if isinstance(video, Clip):
        data, name, suffix = video.mp4(), "clip", ".mp4"
    else:
        path = Path(video)
        name, suffix = path.name, path.suffix.lower()
        if suffix not in (".gif", ".mp4"):
            raise ValueError(f"show_video shows .gif or .mp4 files, got {name!r}")
        data = path.read_bytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(
            f"{name}: {len(data):,} bytes is over the budget of {max_bytes:,} bytes per video "
            "(README, 'Videos'): film fewer steps, keep one frame in `every`, or make the frames smaller")
    if suffix == ".gif":
        return Image(data=data, format="gif", width=width)
    # The source is the <video>'s own src: JupyterLab's sanitizer (an untrusted notebook, i.e.
    # one opened with saved outputs) keeps that, but strips the src of a nested <source>.
    size = f' width="{int(width)}"' if width else ""
    return HTML(f'<video src="data:video/mp4;base64,{base64.b64encode(data).decode()}"{size} {VIDEO_ATTRIBUTES}>'
                "your browser does not play MP4 (H.264) videos</video>")


__all__ = ["DEFAULT_FPS", "MP4_CRF", "VIDEO_BUDGET_BYTES", "Clip", "record_clip", "record_video", "show_video",
           "side_by_side"]
