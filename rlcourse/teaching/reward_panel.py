"""Lab 3's plots, videos and reward-weight panel (ipywidgets): what the notebook shows, nothing graded.

* :func:`plot_history`: a learning curve and each term's weighted contribution per PPO iteration
  (:class:`~rlcourse.envs.locomotion.shaping.TermRecorder`'s history);
* :func:`plot_episode_sums`: per-term episode sums of test episodes as bars;
* :func:`show_video_of`: a short video of a trained Ant policy;
* :func:`reward_panel`: one slider per weight; moving one redraws what two fixed behaviours would
  earn, **Train** runs PPO with the built-in terms and shows the results.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlcourse.envs.locomotion.shaping import (
    BUILTIN_TERMS,
    TERM_NAMES,
    TermFn,
    episode_term_sums,
    lab_rewards,
    train_ppo,
)

PANEL_CLASS = "rlcourse-reward-panel"  # the panel's CSS class (a browser test looks for it)
SLIDER_RANGES = {"forward_velocity": (0.0, 3.0, 0.1), "alive_bonus": (-1.0, 5.0, 0.1),
                 "energy_penalty": (-0.5, 0.1, 0.01), "orientation_penalty": (-3.0, 0.5, 0.1),
                 "fall_penalty": (-10.0, 0.0, 0.5)}


def plot_history(history: list[Mapping[str, float]], weights: Mapping[str, float], ax_total: Any, ax_terms: Any,
                 title: str = "") -> None:
    """The reward per step (left) and each term's weighted value per step (right), per PPO iteration."""
    steps = np.arange(1, len(history) + 1)
    ax_total.plot(steps, [sum(h.values()) for h in history], color="k")
    ax_total.set(xlabel="PPO iteration", ylabel="reward per step", title=title or "learning curve")
    for name in TERM_NAMES:
        if weights[name] != 0:
            ax_terms.plot(steps, [h.get(name, 0.0) for h in history], label=f"{name} ({weights[name]:+g})")
    ax_terms.axhline(0, color="k", lw=0.5)
    ax_terms.set(xlabel="PPO iteration", ylabel="weighted value per step", title="what each term contributed")
    ax_terms.legend(fontsize=7)
    for ax in (ax_total, ax_terms):
        ax.grid(alpha=0.3)


def plot_episode_sums(sums: Mapping[str, float], weights: Mapping[str, float], ax: Any,
                      title: str = "per-term episode sums (10-s episodes)") -> None:
    """Bars of the mean weighted episode sum of each term (green: paid, red: charged)."""
    names = [n for n in TERM_NAMES if weights[n] != 0]
    values = [sums.get(f"rew_{n}", 0.0) for n in names]
    ax.barh(names, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
    ax.axvline(0, color="k", lw=0.5)
    ax.set(title=title, xlabel="mean episode sum of the weighted term")
    ax.grid(alpha=0.3, axis="x")


def show_video_of(agent: Any, steps: int = 100, every: int = 2, seed: int = 0) -> None:
    """A short video of the trained policy: an H.264 clip (a GIF without imageio-ffmpeg), within
    the size budget per video. Needs offscreen OpenGL; skipped with a message without it."""
    from IPython.display import display

    from rlcourse import envs
    from rlcourse.video import Clip, record_clip, show_video

    try:
        env = envs.make("Ant", num_envs=1, seed=seed)
        try:
            clip = record_clip(agent, env, steps=steps, every=every, width=240, height=180)
        finally:
            env.close()
        try:
            shown = show_video(clip, width=360)
        except RuntimeError:   # no imageio-ffmpeg: a GIF, one frame in four (GIFs are ~10x larger)
            keep = max(1, 4 // every)
            gif = Clip(clip.frames[::keep], clip.fps / keep)
            shown = show_video(gif.save(Path(tempfile.mkdtemp(prefix="lab3_")) / "ant.gif"), width=360)
        display(shown)
    except Exception as exc:  # no OpenGL backend on this machine
        print(f"(no video: {exc})")


@torch.no_grad()
def record_unweighted(policy: Callable[[torch.Tensor], torch.Tensor], steps: int = 60, num_envs: int = 16,
                      seed: int = 0) -> dict[str, float]:
    """Mean unweighted value per step of each built-in term for ``policy`` (no learning)."""
    from rlcourse import envs

    env = envs.make("Ant", num_envs=num_envs, seed=seed,
                    rewards=lab_rewards(BUILTIN_TERMS, {n: 1.0 for n in TERM_NAMES}))
    obs, _ = env.reset()
    totals = torch.zeros(len(TERM_NAMES))
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
        totals += env.reward_manager.last_weighted.mean(dim=0)
    env.close()
    return dict(zip(TERM_NAMES, (totals / steps).tolist()))


def reference_behaviours() -> dict[str, dict[str, float]]:
    """What the built-in terms pay per step, unweighted, to a robot standing still and to random motions."""
    gen = torch.Generator().manual_seed(0)
    return {
        "standing still": record_unweighted(lambda obs: torch.zeros(obs.shape[0], 8)),
        "untrained policy": record_unweighted(
            lambda obs: (torch.randn(obs.shape[0], 8, generator=gen) * 0.6).clamp(-1, 1)),
    }


def reward_panel(weights: Mapping[str, float], funcs: Mapping[str, TermFn] = BUILTIN_TERMS, iterations: int = 60,
                 num_envs: int = 64, seed: int = 0, preview: bool = True) -> Any:
    """The panel (an ipywidgets ``VBox`` with CSS class :data:`PANEL_CLASS`): one slider per weight
    (starting at ``weights``), an iterations slider and a **Train** button.

    ``preview=False`` leaves the plot empty until a slider moves: the autograder's headless
    executor (nbclient) can hang waiting on plots captured into an Output widget, and while
    grading the built-in terms the preview records are withheld.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import clear_output

    behaviours: dict[str, dict[str, float]] = {}  # recorded at the first preview (a few seconds)
    sliders = {name: widgets.FloatSlider(value=weights[name], min=lo, max=hi, step=step, description=name,
                                         continuous_update=False, readout_format="+.2f",
                                         style={"description_width": "140px"}, layout=widgets.Layout(width="420px"))
               for name, (lo, hi, step) in SLIDER_RANGES.items()}
    iters = widgets.IntSlider(value=iterations, min=10, max=300, step=10, description="iterations",
                              continuous_update=False)
    with_video = widgets.Checkbox(value=True, description="record a video")
    button = widgets.Button(description="Train", button_style="primary", icon="play",
                            tooltip="train PPO with these weights and show the results")
    status = widgets.HTML("Move a slider, or press Train.")
    out = widgets.Output()

    def current() -> dict[str, float]:
        return {name: slider.value for name, slider in sliders.items()}

    def draw_preview(_: Any = None) -> None:
        w = current()
        with out:
            clear_output(wait=True)
            if not behaviours:
                behaviours.update(reference_behaviours())
            fig, ax = plt.subplots(figsize=(8, 2.8))
            names = list(behaviours)
            y = np.arange(len(TERM_NAMES))
            for k, b in enumerate(names):
                ax.barh(y + 0.4 * k, [w[t] * behaviours[b][t] for t in TERM_NAMES], height=0.4, label=b)
            ax.set_yticks(y + 0.2, TERM_NAMES)
            ax.axvline(0, color="k", lw=0.5)
            totals = ", ".join(f"{b}: {sum(w[t] * behaviours[b][t] for t in TERM_NAMES):+.2f}" for b in names)
            ax.set(xlabel="weighted value per step", title=f"reward per step before learning ({totals})")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="x")
            plt.show()

    def train(_: Any) -> None:
        button.disabled = True
        w = current()
        try:
            status.value = f"training for {iters.value} iterations ..."
            agent, history, seconds = train_ppo(funcs, w, iterations=iters.value, num_envs=num_envs, seed=seed)
            sums = episode_term_sums(agent.inference_policy(), funcs, w)
            status.value = (f"trained in {seconds:.0f} s; the deterministic policy walked "
                            f"<b>{sums['x_distance']:+.2f} m</b> along +x in 10 s (mean of 16 robots)")
            with out:
                clear_output(wait=True)
                fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
                plot_history(history, w, axes[0], axes[1])
                plot_episode_sums(sums, w, axes[2])
                plt.tight_layout()
                plt.show()
                if with_video.value:
                    show_video_of(agent)
        except Exception as exc:
            status.value = f"training failed: {type(exc).__name__}: {exc}"
        finally:
            button.disabled = False

    for slider in sliders.values():
        slider.observe(draw_preview, names="value")
    button.on_click(train)
    controls = widgets.HBox([widgets.VBox(list(sliders.values())), widgets.VBox([iters, with_video, button, status])])
    panel = widgets.VBox([widgets.HTML("<b>Reward weights</b> (built-in terms; the graded weights are preset)"),
                          controls, out])
    panel.add_class(PANEL_CLASS)
    if preview:
        draw_preview()
    return panel


__all__ = ["PANEL_CLASS", "SLIDER_RANGES", "plot_episode_sums", "plot_history", "record_unweighted",
           "reference_behaviours", "reward_panel", "show_video_of"]
