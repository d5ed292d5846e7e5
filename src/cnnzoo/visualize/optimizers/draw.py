"""Drawing the optimizers' paths of :func:`.paths.optimizer_paths`: the surface as contours,
one colour per optimizer with its learning rate in the legend, the start and the minima (and a
saddle point) marked; as a PNG, or as an animated GIF that draws the paths step by
step.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter

from cnnzoo.fileio import atomic_write_bytes
from cnnzoo.visualize.optimizers.paths import LABELS, OPTIMIZERS, Paths

# One fixed colour per optimizer (matplotlib's tab10), so that figures compare at a glance.
COLOURS = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(OPTIMIZERS)}
GIF_FRAMES = 40  # frames of an animation, whatever the number of steps: a small file


def _figure(paths: Paths) -> tuple[Any, Any, dict[str, Any]]:
    """The contour plot with the marks, and one (empty) line per optimizer."""
    s = paths.surface
    xs = np.linspace(*s.xlim, 200)
    ys = np.linspace(*s.ylim, 200)
    gx, gy = np.meshgrid(xs, ys)
    z = s.f(gx, gy)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    if s.log_levels:
        # Levels evenly spaced in log(f − f_min): a narrow valley shows as many nested lines.
        f_min = min(s.f(*m) for m in s.minima)
        z = np.log10(z - f_min + 1e-3)
    ax.contour(gx, gy, z, levels=30, cmap="Greys", linewidths=0.6)
    ax.plot(*s.start, "ko", markersize=7, label="start", zorder=5)
    minima = np.array(s.minima)
    ax.plot(minima[:, 0], minima[:, 1], "k*", markersize=13, label="minimum", zorder=5)
    if s.saddle is not None:
        ax.plot(*s.saddle, "kX", markersize=9, label="saddle point", zorder=5)
    lines = {}
    for name in paths.points:
        label = f"{LABELS[name]}, lr {paths.lrs[name]:g}"
        if paths.diverged[name]:
            label += f" (diverged at step {len(paths.points[name])})"
        (lines[name],) = ax.plot([], [], "-", color=COLOURS[name], lw=1.6, label=label)
    ax.set(xlim=s.xlim, ylim=s.ylim, xlabel="x", ylabel="y")
    ax.set_title(f"{s.name}: {s.formula}, {paths.steps} steps", fontsize=10)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig, ax, lines


def _show(lines: dict[str, Any], paths: Paths, steps: int) -> None:
    for name, line in lines.items():
        points = paths.points[name][: steps + 1]
        line.set_data(points[:, 0], points[:, 1])


def draw_paths(paths: Paths, out: str | Path) -> Path:
    """Write the figure of ``paths`` to ``out`` (a ``.png`` file), atomically."""
    out = Path(out)
    fig, _, lines = _figure(paths)
    _show(lines, paths, paths.steps)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def animate_paths(paths: Paths, out: str | Path, fps: int = 10) -> Path:
    """Write an animated GIF of ``paths`` growing step by step to ``out``, atomically."""
    out = Path(out)
    fig, _, lines = _figure(paths)
    frames = np.unique(np.linspace(0, paths.steps, GIF_FRAMES).round().astype(int))
    animation = FuncAnimation(fig, lambda k: _show(lines, paths, int(k)), frames=frames)
    # PillowWriter needs a file name; write beside the target, then move it in atomically.
    tmp = out.with_name(f".{out.name}.frames.gif")
    try:
        animation.save(tmp, writer=PillowWriter(fps=fps), dpi=70)
        atomic_write_bytes(out, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return out
