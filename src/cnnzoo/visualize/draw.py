"""The pictures, drawn from the tensors of :mod:`cnnzoo.visualize.maps` and ``.cam``: each
function takes arrays and returns PNG bytes (matplotlib's object API on an Agg canvas, no
pyplot state, so drawing is safe from any thread and leaves nothing open).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Enough channels to see what a layer responds to; more is a wall of noise at this size.
MAX_FILTERS = 64
TOP_CHANNELS = 16


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def display_image(
    image: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """A prepared image ``(C, H, W)`` back in [0, 1] for showing: normalisation undone (when
    ``mean``/``std`` are given), clipped; ``(H, W, 3)`` for 3 channels, ``(H, W)`` otherwise
    (the first channel)."""
    x = image.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    x = x.clamp(0, 1)
    return x.permute(1, 2, 0) if x.shape[0] == 3 else x[0]


def _show(ax, picture: torch.Tensor, **kwargs) -> None:
    if picture.dim() == 2:
        kwargs.setdefault("cmap", "gray")
    ax.imshow(picture.numpy(), interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def symmetric(weight: torch.Tensor) -> torch.Tensor:
    """One filter ``(C, kH, kW)`` scaled symmetrically around 0 into [0, 1]: 0 → 0.5 (mid
    grey), the largest magnitude → 0 or 1, so the sign of every weight stays visible."""
    peak = weight.abs().max()
    return 0.5 + 0.5 * weight / peak if peak > 0 else torch.full_like(weight, 0.5)


def mosaic(
    tiles: Sequence[torch.Tensor], cols: int, gap: int = 1, fill: float = 1.0
) -> torch.Tensor:
    """Tiles of one shape, ``(h, w)`` or ``(h, w, 3)`` in [0, 1], laid out in rows of
    ``cols`` with ``gap`` pixels of ``fill`` between them: one image, drawn with one
    ``imshow`` (a subplot per tile costs a second per figure)."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    shape = (rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles[0].shape[2:])
    out = torch.full(shape, fill)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def _label_tiles(ax, count: int, cols: int, h: int, w: int, labels: Sequence[str], gap: int = 1):
    for i in range(count):
        r, c = divmod(i, cols)
        ax.text(
            c * (w + gap) + w / 2 - 0.5, r * (h + gap) - 0.6, labels[i], fontsize=6,
            ha="center", va="bottom",
        )  # fmt: skip


def draw_filters(weights: torch.Tensor, title: str) -> bytes:
    """The filters ``(K, C, kH, kW)`` as a grid: RGB for 3 input channels, grey otherwise (the
    sum over the input channels), each filter scaled symmetrically around 0."""
    count = min(len(weights), MAX_FILTERS)
    cols = math.ceil(math.sqrt(count))
    tiles = []
    for w in weights[:count]:
        w = w if w.shape[0] == 3 else w.sum(dim=0, keepdim=True)
        picture = symmetric(w)
        tiles.append(picture.permute(1, 2, 0) if picture.shape[0] == 3 else picture[0])
    _, c, kh, kw = weights.shape
    gap = max(1, kh // 5)
    grid = mosaic(tiles, cols, gap)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(min(1.0 * cols, 9) + 0.5, min(1.0 * rows, 9) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    _show(ax, grid, vmin=0, vmax=1)
    _label_tiles(ax, count, cols, kh, kw, [str(i) for i in range(count)], gap)
    ax.axis("off")
    shown = f"the first {count} of {len(weights)}" if count < len(weights) else f"{count}"
    colour = "RGB" if c == 3 else ("grey" if c == 1 else f"grey: sum of {c} input channels")
    fig.suptitle(
        f"{title}: {shown} filters, {c}×{kh}×{kw} ({colour})\n"
        "each filter scaled symmetrically around 0 (grey 0, dark negative, light positive)",
        fontsize=9,
    )
    return _png(fig)


def most_active(maps: torch.Tensor, count: int = TOP_CHANNELS) -> list[int]:
    """The channels of ``maps`` (``(C, H, W)`` or ``(F,)``) with the highest mean activation,
    highest first."""
    means = maps.flatten(1).mean(dim=1) if maps.dim() == 3 else maps
    return means.topk(min(count, len(means))).indices.tolist()


def draw_maps(picture: torch.Tensor, maps: torch.Tensor, layer: str) -> bytes:
    """The image as the model saw it beside the most active channels of one layer's output
    ``(C, H, W)`` (each channel scaled to its own range, its number and range above it), or
    for a vector ``(F,)`` its largest units as bars."""
    channels = most_active(maps)
    fig = Figure(figsize=(10, 4.2))
    grid = fig.add_gridspec(1, 5)
    _show(fig.add_subplot(grid[0, :2]), picture)
    fig.axes[0].set_title("input, as the model saw it", fontsize=8)
    ax = fig.add_subplot(grid[0, 2:])
    if maps.dim() == 3:
        c, h, w = maps.shape
        cols = 4
        tiles = []
        for ch in channels:
            m = maps[ch]
            low, high = float(m.min()), float(m.max())
            tiles.append((m - low) / (high - low) if high > low else torch.zeros_like(m))
        gap = max(1, h // 6)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")  # NaN: the gaps
        _show(ax, mosaic(tiles, cols, gap, fill=float("nan")), cmap=cmap, vmin=0, vmax=1)
        labels = [f"ch {ch}" for ch in channels]
        _label_tiles(ax, len(tiles), cols, h, w, labels, gap)
        ax.axis("off")
        fig.suptitle(
            f"{layer}: {c} maps of {h}×{w}; the {len(channels)} most active (highest mean), "
            f"each scaled to its own range",
            fontsize=9,
        )
    else:
        ax.bar(range(len(channels)), [float(maps[i]) for i in channels], color="tab:blue")
        ax.set_xticks(range(len(channels)), [str(i) for i in channels], fontsize=7)
        ax.set_xlabel("unit", fontsize=8)
        fig.suptitle(
            f"{layer}: a vector of {len(maps)} units, the {len(channels)} largest shown",
            fontsize=9,
        )
    return _png(fig)


def draw_cam(picture: torch.Tensor, cam: torch.Tensor, title: str) -> bytes:
    """The image, and the class activation map ``(H, W)`` in [0, 1] laid over it."""
    fig = Figure(figsize=(6.4, 3.4))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _show(left, picture)
    left.set_title("input, as the model saw it", fontsize=8)
    _show(right, picture)
    right.imshow(cam.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    right.set_title("class activation map (red: most evidence)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _png(fig)
