"""The comparison's charts: a pure function computes each chart's data from the result rows
(positions, ball areas, labels, the Pareto set), and a drawing function turns that into a file.
Tests check the data; the drawing only places it.

The ball chart is the classic one (Canziani, Paszke, Culurciello 2016, "An analysis of deep
neural network models for practical applications", Fig. 2): x = multiply-adds on a log scale,
y = top-1, each ball's AREA proportional to the model's parameters.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap

from cnnzoo.fileio import atomic_write_bytes
from cnnzoo.units import human

MAX_AREA = 2500.0  # marker size (diameter², points²) of the largest ball: 50 points across
_TAB10 = plt.get_cmap("tab10")
# tab10 is a ListedColormap whose colours are ten RGB tuples; the stubs type get_cmap as any
# Colormap, and a ListedColormap's colours as any colour data.
assert isinstance(_TAB10, ListedColormap)
COLORS = cast(tuple[tuple[float, float, float], ...], _TAB10.colors)


@dataclass
class BallChart:
    """Everything drawn on a ball chart.

    Attributes:
        labels: one name per ball.
        x, y: ball centres (e.g. MACs and top-1 %).
        yerr: standard deviation of ``y`` per ball (``None`` where there is none).
        params: parameters per ball.
        areas: matplotlib marker sizes (points², the square of a ball's diameter),
            ``params × scale``: the drawn areas (π/4 of these) are proportional to parameters.
        pareto: indices of the balls on the Pareto front, in increasing ``x``.
        legend: ``(label, area)`` pairs for the size scale.
        maximize_x: whether larger ``x`` is better (throughput) or worse (MACs).
        title, xlabel, ylabel: the texts.
    """

    labels: list[str]
    x: list[float]
    y: list[float]
    yerr: list[float | None]
    params: list[int]
    areas: list[float]
    pareto: list[int]
    legend: list[tuple[str, float]]
    maximize_x: bool
    title: str
    xlabel: str
    ylabel: str


def pareto_front(x: Sequence[float], y: Sequence[float], *, maximize_x: bool = False) -> list[int]:
    """Indices of the points no other point beats: none has at least as good an ``x`` and at
    least as high a ``y`` with one of them strictly better. Larger ``y`` is better; smaller
    ``x`` is, unless ``maximize_x``. Returned in increasing ``x``."""
    sign = -1.0 if maximize_x else 1.0
    cost = [sign * v for v in x]

    def beats(j: int, i: int) -> bool:
        return cost[j] <= cost[i] and y[j] >= y[i] and (cost[j] < cost[i] or y[j] > y[i])

    front = [i for i in range(len(x)) if not any(beats(j, i) for j in range(len(x)) if j != i)]
    return sorted(front, key=lambda i: (x[i], -y[i]))


def three_digits(value: float) -> str:
    """``1157.9`` → ``"1,158"``, ``7.512`` → ``"7.51"``: three significant digits, no exponent."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def sides_text(sizes: Mapping[str, int]) -> str:
    """The input sides of a chart's models for its axis label: ``"32×32"`` when they share one,
    else the most common and the exceptions, ``"32×32 (alexnet 63×63)"``."""
    counts: dict[int, int] = {}
    for side in sizes.values():
        counts[side] = counts.get(side, 0) + 1
    common = max(counts, key=lambda s: (counts[s], -s))
    others = [f"{m} {s}×{s}" for m, s in sizes.items() if s != common]
    return f"{common}×{common}" + (f" ({', '.join(others)})" if others else "")


def size_legend(params: Sequence[int], scale: float) -> list[tuple[str, float]]:
    """Parameter counts for the size legend, with their areas at ``scale`` points² per
    parameter: the powers of ten between the smallest and the largest model (the largest four),
    or those two counts to two digits when fewer than two powers of ten lie between them."""
    low, high = min(params), max(params)
    powers = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    values = [10**k for k in powers][-4:]
    if len(values) < 2:
        values = sorted({_two_digits(low), *values, _two_digits(high)})
    return [(human(v, significant=3), v * scale) for v in values]


def _two_digits(n: int) -> int:
    digits = max(0, len(str(int(n))) - 2)
    return round(n, -digits)


def ball_chart_data(
    rows: Sequence[Mapping],
    *,
    x_key: str = "macs",
    y_key: str = "top1_pct",
    yerr_key: str | None = "top1_pct_std",
    maximize_x: bool = False,
    scale: float | None = None,
    title: str = "",
    xlabel: str = "multiply-adds per image (conv + linear MACs, log scale)",
    ylabel: str = "top-1 accuracy (%)",
) -> BallChart:
    """The ball chart of ``rows`` (dicts with ``model``, ``params``, ``x_key``, ``y_key``).

    Args:
        rows: one dict per ball.
        x_key, y_key: the fields for the position.
        yerr_key: the field holding ``y``'s spread, or ``None``.
        maximize_x: larger ``x`` is better (for the Pareto front).
        scale: points² per parameter; ``None``: the largest model gets :data:`MAX_AREA`.
        title, xlabel, ylabel: the texts.
    """
    params = [int(r["params"]) for r in rows]
    scale = MAX_AREA / max(params) if scale is None else scale
    x = [float(r[x_key]) for r in rows]
    y = [float(r[y_key]) for r in rows]
    return BallChart(
        labels=[str(r.get("model", r.get("name"))) for r in rows],
        x=x,
        y=y,
        yerr=[r.get(yerr_key) if yerr_key else None for r in rows],
        params=params,
        areas=[p * scale for p in params],
        pareto=pareto_front(x, y, maximize_x=maximize_x),
        legend=size_legend(params, scale),
        maximize_x=maximize_x,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
    )


def throughput_batch_data(bench_rows: Sequence[Mapping]) -> dict[str, list[tuple[int, float]]]:
    """Per model, ``(batch, images per second)`` in increasing batch."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in bench_rows:
        series.setdefault(r["model"], []).append((int(r["batch"]), float(r["throughput"])))
    return {m: sorted(points) for m, points in series.items()}


def density_data(rows: Sequence[Mapping]) -> list[tuple[str, float]]:
    """``(model, top-1 points per million parameters)``, densest first."""
    pairs = [(r["model"], float(r["top1_pct"]) / (int(r["params"]) / 1e6)) for r in rows]
    return sorted(pairs, key=lambda p: -p[1])


def degradation_data(histories: Mapping[str, Sequence[Mapping]]) -> dict[str, dict[str, list]]:
    """Per model: ``epoch``, ``train_error`` and ``val_error`` lists, errors in percent
    (100 − accuracy), from the runs' ``metrics.jsonl``."""
    return {
        model: {
            "epoch": [h["epoch"] for h in history],
            "train_error": [100 * (1 - h["train_acc"]) for h in history],
            "val_error": [100 * (1 - h["val_acc"]) for h in history],
        }
        for model, history in histories.items()
    }


# --- drawing ---------------------------------------------------------------------------------


def save(fig: plt.Figure, paths: Sequence[Path], extra: Sequence[plt.Artist] = ()) -> None:
    """Write ``fig`` to each path (format from the suffix), atomically, then close it;
    ``extra``: artists outside the axes that the saved area must include (legends)."""
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(
            buffer, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight",
            bbox_extra_artists=list(extra),
        )  # fmt: skip
        atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


def palette(models: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per model, so that a model has the same colour in every chart."""
    return {m: COLORS[i % len(COLORS)] for i, m in enumerate(models)}


def draw_ball_chart(
    chart: BallChart,
    paths: Sequence[Path],
    *,
    xlog: bool = True,
    colors: Mapping[str, tuple[float, float, float]] | None = None,
) -> None:
    """Balls with their labels, the Pareto front as a dashed line, and a size legend;
    ``colors`` by label (:func:`palette`; the labels' order otherwise)."""
    fig, ax = plt.subplots(figsize=(10, 6.5))
    by_label = colors or palette(chart.labels)
    ball_colors = [by_label.get(label, "gray") for label in chart.labels]
    ax.scatter(
        chart.x, chart.y, s=chart.areas, c=ball_colors, alpha=0.55, edgecolors="black",
        linewidths=0.8, zorder=3,
    )  # fmt: skip
    # The centres, so that a model too small for a visible ball still shows where it is.
    ax.scatter(chart.x, chart.y, s=4, c="black", zorder=4)
    for i, err in enumerate(chart.yerr):
        if err:
            ax.errorbar(chart.x[i], chart.y[i], yerr=err, color="black", capsize=3, zorder=4)
    front = []
    if len(chart.pareto) > 1:
        front = ax.plot(
            [chart.x[i] for i in chart.pareto], [chart.y[i] for i in chart.pareto], "--",
            color="gray", linewidth=1.2, zorder=2, label="Pareto front",
        )  # fmt: skip
    if xlog:
        ax.set_xscale("log")
    _pad_limits(ax, chart, xlog)
    _label_balls(ax, chart)
    handles = [
        ax.scatter([], [], s=area, color="lightgray", edgecolors="black", label=f"{label} params")
        for label, area in chart.legend
    ]
    # Both legends outside the axes, on the right: inside they would hide balls or labels.
    legends = [
        ax.legend(
            handles=handles, title="ball area ∝ parameters", loc="upper left",
            bbox_to_anchor=(1.02, 1.0), labelspacing=3.2, handlelength=4.0, handletextpad=1.2,
            borderpad=1.5, frameon=False,
        )
    ]  # fmt: skip
    if front:
        ax.add_artist(legends[0])
        legends.append(
            ax.legend(handles=front, loc="lower left", bbox_to_anchor=(1.02, 0.0), frameon=False)
        )
    ax.set(xlabel=chart.xlabel, ylabel=chart.ylabel, title=chart.title)
    ax.grid(alpha=0.3, which="both")
    save(fig, paths, extra=legends)


def _label_balls(ax: plt.Axes, chart: BallChart, fontsize: float = 9.0) -> None:
    """Each ball's name beside it: right, left, above or below it, whichever first overlaps no
    ball and no name already placed (top balls first); failing those, to the right a line
    higher or lower at a time, with a thin line back to its ball."""
    to_points = 72.0 / ax.figure.dpi
    line, char = 1.25 * fontsize, 0.6 * fontsize  # points
    frame = ax.get_window_extent()
    bounds = (
        frame.x0 * to_points,
        frame.x1 * to_points,
        frame.y0 * to_points,
        frame.y1 * to_points,
    )
    centres = [
        ax.transData.transform((x, y)) * to_points for x, y in zip(chart.x, chart.y, strict=True)
    ]
    radii = [math.sqrt(area) / 2 for area in chart.areas]  # a marker's size is its diameter²
    taken = [(cx - r, cx + r, cy - r, cy + r) for (cx, cy), r in zip(centres, radii, strict=True)]

    def free(box: tuple[float, float, float, float], own: int) -> bool:
        x0, x1, y0, y1 = box
        inside = bounds[0] <= x0 and x1 <= bounds[1] and bounds[2] <= y0 and y1 <= bounds[3]
        return inside and not any(
            x0 < b1 and b0 < x1 and y0 < c1 and c0 < y1
            for k, (b0, b1, c0, c1) in enumerate(taken)
            if k != own
        )

    for i in sorted(range(len(chart.labels)), key=lambda i: -chart.y[i]):
        (cx, cy), r, width = centres[i], radii[i], char * len(chart.labels[i])
        options = [  # (offset x, offset y, ha, va), offsets in points from the centre
            (r + 3, 0.0, "left", "center"),
            (-r - 3, 0.0, "right", "center"),
            (0.0, r + 2, "center", "bottom"),
            (0.0, -r - 2, "center", "top"),
        ]
        options += [
            (r + 3, sign * k * line, "left", "center") for k in range(1, 8) for sign in (1, -1)
        ]
        chosen, leader = options[0], False
        for n, (dx, dy, ha, va) in enumerate(options):
            x0 = cx + dx - {"left": 0.0, "right": width, "center": width / 2}[ha]
            y0 = cy + dy - {"center": line / 2, "bottom": 0.0, "top": line}[va]
            box = (x0, x0 + width, y0, y0 + line)
            if free(box, i):
                chosen, leader = (dx, dy, ha, va), n >= 4
                taken.append(box)
                break
        dx, dy, ha, va = chosen
        ax.annotate(
            chart.labels[i], (chart.x[i], chart.y[i]), xytext=(dx, dy),
            textcoords="offset points", ha=ha, va=va, fontsize=fontsize, zorder=5,
            arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.6} if leader else None,
        )  # fmt: skip


def _pad_limits(ax: plt.Axes, chart: BallChart, xlog: bool) -> None:
    # Room for the largest ball and its label at either end.
    lo, hi = min(chart.x), max(chart.x)
    if xlog:
        ax.set_xlim(lo / 3, hi * 4)
    else:
        span = (hi - lo) or abs(hi) or 1.0
        ax.set_xlim(lo - 0.15 * span, hi + 0.3 * span)
    y_lo, y_hi = min(chart.y), max(chart.y)
    span = max(y_hi - y_lo, 1.0)
    ax.set_ylim(y_lo - 0.25 * span, min(y_hi + 0.15 * span, 100 + 0.05 * span))


def draw_throughput_batch(
    series: Mapping[str, Sequence[tuple[int, float]]],
    path: Path,
    colors: Mapping[str, tuple[float, float, float]] | None = None,
) -> None:
    """Images per second against batch size, one line per model (both axes log)."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = colors or palette(list(series))
    for model, points in series.items():
        batches, speeds = zip(*points, strict=True)
        ax.plot(batches, speeds, "o-", color=colors.get(model, "gray"), label=model)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({b for points in series.values() for b, _ in points})
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.set(
        xlabel="batch size (images per call)", ylabel="throughput (images/s, log scale)",
        title="inference throughput against batch size (best backend per batch)",
    )  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    save(fig, [path])


def draw_density(pairs: Sequence[tuple[str, float]], path: Path) -> None:
    """Horizontal bars of top-1 points per million parameters (log scale), densest on top."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(pairs) + 1.5))
    names = [p[0] for p in pairs][::-1]
    values = [p[1] for p in pairs][::-1]
    ax.barh(names, values, color="tab:blue", alpha=0.7)
    for i, value in enumerate(values):
        ax.annotate(three_digits(value), (value, i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(right=max(values) * 4)  # room for the largest bar's number
    ax.set(
        xlabel="accuracy density: top-1 points per million parameters (log scale)",
        title="accuracy density (higher: more accuracy per parameter)",
    )  # fmt: skip
    ax.grid(alpha=0.3, axis="x", which="both")
    save(fig, [path])


def draw_degradation(data: Mapping[str, Mapping[str, list]], path: Path, title: str = "") -> None:
    """Training (dashed) and validation (solid) error per epoch; plain nets red, residual blue,
    the deeper net of each kind in the darker shade and the thicker line."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    shades = {
        "plain": ("#f4a582", "#b2182b"),
        "resnet": ("#92c5de", "#2166ac"),
    }
    for model, series in data.items():
        kind = "plain" if model.startswith("plain") else "resnet"
        depth = int("".join(c for c in model if c.isdigit()) or 0)
        deep = depth >= 50
        color = shades[kind][1 if deep else 0]
        width = 2.2 if deep else 1.4
        ax.plot(series["epoch"], series["train_error"], "--", color=color, linewidth=width,
                label=f"{model} training")  # fmt: skip
        ax.plot(series["epoch"], series["val_error"], "-", color=color, linewidth=width,
                label=f"{model} validation")  # fmt: skip
    ax.set_yscale("symlog", linthresh=1.0)  # linear below 1%, where an error can be 0
    ax.set(
        xlabel="epoch", ylabel="error (%, log scale above 1%)",
        title=title or "plain vs residual networks: training (dashed) and validation (solid) error",
    )  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    save(fig, [path])
