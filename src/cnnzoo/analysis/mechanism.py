"""The mechanism, worked with numbers: a convolution and a pooling layer cell by cell, ReLU,
softmax and flatten (``cnnzoo explain conv|pool|relu|softmax|flatten``).

Each walk-through is data first: :func:`conv_walkthrough` and :func:`pool_walkthrough` return
one record per output cell (the input positions read, the values there, the products or the
choice, the result), computed here in plain Python, independently of torch, so that tests can
hold them against ``torch.nn.functional.conv2d`` and cnnzoo's pooling layers. The ``render_*``
functions only format records; ``to_dict()`` gives them to programs (``--json``, a web page).

Positions are in input coordinates: a row or column below 0 or at/after the input's side is
zero padding. Grids are lists of rows; a channel-first input is a list of grids.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.analysis import explain, formulas
from cnnzoo.checks import check_choice, check_int
from cnnzoo.errors import InvalidArgumentError

Number = int | float
Grid = list[list[Number]]

VALUE_KINDS = ("random", "ramp")
POOL_KINDS = ("max", "avg", "min", "stochastic")
CELLS_SHOWN = 9  # cells written out in full by default; the rest are counted
GRID_LIMIT = 32  # grids wider or taller than this are not printed (``--json`` has them)


# --- values -----------------------------------------------------------------------------------


def parse_shape(option: str, text: str) -> tuple[int, int]:
    """``"5x7"`` → ``(5, 7)`` (rows × columns); ``"5"`` is a square."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims = (dims[0], dims[0])
    if len(dims) != 2 or min(dims) < 1:
        raise InvalidArgumentError(
            f"{option} {text!r} is not a size: write HxW with positive integers, e.g. 5x5."
        )
    return dims[0], dims[1]


def parse_chw(option: str, text: str) -> tuple[int, int, int]:
    """``"2x3x3"`` → ``(2, 3, 3)`` (channels × rows × columns)."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise InvalidArgumentError(
            f"{option} {text!r} is not a map size: write CxHxW with positive integers, e.g. 2x3x3."
        )
    return dims[0], dims[1], dims[2]


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def num(v: Number) -> str:
    """A value as the walk-through writes it: integers without a point, others to 4 digits,
    a minus sign rather than a hyphen."""
    text = str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return text.replace("-", "−")


def _shape_of(value: Any, depth: int) -> tuple[int, ...] | None:
    """The shape of a rectangular nested list of numbers ``depth`` deep, or None."""
    if depth == 0:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return () if ok and math.isfinite(value) else None
    if not isinstance(value, list) or not value:
        return None
    inner = [_shape_of(v, depth - 1) for v in value]
    if any(s is None or s != inner[0] for s in inner):
        return None
    assert inner[0] is not None  # checked just above
    return (len(value), *inner[0])


def _channels(value: Any) -> list[Grid] | None:
    """A grid (one channel) or a list of grids as a list of grids; None if neither."""
    if _shape_of(value, 2) is not None:
        return [value]
    if _shape_of(value, 3) is not None:
        return value
    return None


def read_values(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values file: a JSON object with ``"input"`` (H×W or C×H×W numbers) and, for a
    convolution, ``"kernel"`` (kh×kw or C×kh×kw) and an optional number ``"bias"`` (0).

    Returns the entries as lists of grids (and the bias as a number); the caller checks the
    shapes against the options.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(
            f"--values {str(path)!r} is neither random, ramp nor a file that exists: give one "
            f"of those (the file's format is in docs/analyzer.md)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgumentError(
            f"--values {str(path)!r} is not a JSON file ({type(err).__name__}): write "
            f'{{"input": [[...], ...], "kernel": [[...], ...], "bias": 0}}.'
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            f"--values {str(path)!r} must hold a JSON object with the keys {', '.join(keys)}."
        )
    out: dict[str, Any] = {}
    for key in keys:
        grids = _channels(data.get(key))
        if grids is None:
            raise InvalidArgumentError(
                f"--values {str(path)!r}: {key!r} must be a rectangular list of rows of numbers "
                f"(H×W) or a list of such grids (C×H×W)."
            )
        out[key] = grids
    bias = data.get("bias", 0)
    if "kernel" in keys and _shape_of(bias, 0) is None:
        raise InvalidArgumentError(
            f"--values {str(path)!r}: 'bias' must be a number, got {bias!r}."
        )
    out["bias"] = bias
    return out


def check_file_shape(path: str, key: str, grids: list[Grid], expected: tuple[int, ...],
                      how: str) -> None:  # fmt: skip
    got = (len(grids), len(grids[0]), len(grids[0][0]))
    if got != expected:
        raise InvalidArgumentError(
            f"--values {path!r}: {key!r} is {shape_text(got)} (C×H×W), expected "
            f"{shape_text(expected)} ({how}): make the file's {key} that shape or change the "
            f"options to match it."
        )


def make_values(
    kind: str, shape: tuple[int, int, int], kernel: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> tuple[list[Grid], list[Grid] | None, int]:  # fmt: skip
    """Integer example values: ``random`` (seeded: input 0–9, kernel −1…1, bias −2…2) or
    ``ramp`` (input 0, 1, 2, … in reading order across channels; kernel 1, 2, …, k², bias 0).

    Integers keep every product and sum exact in float32 too, so the printed map equals torch's
    to the last digit.
    """
    check_choice("--values", kind, VALUE_KINDS)
    c, h, w = shape
    image: list[Grid]
    weights: list[Grid] | None = None
    if kind == "ramp":
        image = [[[ch * h * w + i * w + j for j in range(w)] for i in range(h)] for ch in range(c)]
        if kernel is not None:
            kc, kh, kw = kernel
            weights = [[[i * kw + j + 1 for j in range(kw)] for i in range(kh)] for _ in range(kc)]
        return image, weights, 0
    rng = random.Random(seed)
    image = [[[rng.randint(0, 9) for _ in range(w)] for _ in range(h)] for _ in range(c)]
    if kernel is not None:
        kc, kh, kw = kernel
        weights = [[[rng.randint(-1, 1) for _ in range(kw)] for _ in range(kh)] for _ in range(kc)]
    return image, weights, rng.randint(-2, 2) if kernel is not None else 0


# --- convolution ------------------------------------------------------------------------------


@dataclass
class ConvCell:
    """One output value of a convolution, worked out.

    Attributes:
        row, col: the output position.
        rows, cols: the input rows and columns the kernel reads (input coordinates; outside
            ``[0, H)`` / ``[0, W)`` is zero padding). With dilation D they step by D.
        windows: per input channel, the values read (padding as 0).
        products: per input channel, window ⊙ kernel, element by element.
        channel_sums: per input channel, the sum of its products.
        total: the sum over channels; ``result = total + bias``.
    """

    row: int
    col: int
    rows: list[int]
    cols: list[int]
    windows: list[Grid]
    products: list[Grid]
    channel_sums: list[Number]
    total: Number
    bias: Number
    result: Number


@dataclass
class ConvWalkthrough:
    """A single-filter convolution of a C×H×W input, every output cell worked out."""

    input: list[Grid]
    kernel: list[Grid]
    bias: Number
    stride: int
    padding: int
    dilation: int
    output: Grid
    cells: list[ConvCell] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return len(self.input), len(self.input[0]), len(self.input[0][0])

    @property
    def kernel_shape(self) -> tuple[int, int, int]:
        return len(self.kernel), len(self.kernel[0]), len(self.kernel[0][0])

    @property
    def output_shape(self) -> tuple[int, int]:
        return len(self.output), len(self.output[0]) if self.output else 0

    def padded(self, channel: int) -> Grid:
        """One channel with its zero padding, as the kernel slides over it."""
        _, h, w = self.input_shape
        p = self.padding
        return [
            [_at(self.input[channel], i, j, h, w) for j in range(-p, w + p)]
            for i in range(-p, h + p)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "kernel_shape": list(self.kernel_shape),
            "output_shape": list(self.output_shape),
            **asdict(self),
        }


def _at(grid: Grid, i: int, j: int, h: int, w: int) -> Number:
    return grid[i][j] if 0 <= i < h and 0 <= j < w else 0


def _check_geometry(stride: int, padding: int, dilation: int) -> None:
    check_int("--stride", stride)
    check_int("--padding", padding, minimum=0)
    check_int("--dilation", dilation)


def conv_walkthrough(
    input: list[Grid] | Grid,
    kernel: list[Grid] | Grid,
    bias: Number = 0,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> ConvWalkthrough:
    """Every output cell of ``out = conv2d(input, kernel) + bias`` with one filter, worked out.

    ``out[r, c] = Σ_ch Σ_i Σ_j x_pad[ch, r·S + i·D, c·S + j·D] · k[ch, i, j] + b``: the kernel
    (C×kh×kw) slides with stride S over the zero-padded input (C×H×W), its taps D apart.

    Args:
        input: H×W (one channel) or C×H×W numbers.
        kernel: kh×kw or C×kh×kw, as many channels as the input.
        bias: added to every output value.
        stride, padding, dilation: as ``torch.nn.Conv2d`` takes them (single integers).

    Raises:
        InvalidArgumentError: ragged or non-numeric values, channels that differ, a stride or
            dilation below 1, negative padding, or a kernel larger than the padded input.
    """
    x = _channels(input)
    k = _channels(kernel)
    if x is None or k is None:
        raise InvalidArgumentError(
            "input and kernel must be rectangular grids of numbers (H×W or C×H×W)."
        )
    _check_geometry(stride, padding, dilation)
    c, h, w = len(x), len(x[0]), len(x[0][0])
    kc, kh, kw = len(k), len(k[0]), len(k[0][0])
    if kc != c:
        raise InvalidArgumentError(
            f"the kernel has {kc} channel(s) and the input {c}: a filter reads every input "
            f"channel, so give the kernel {c}."
        )
    out_h = formulas.conv_output_size(h, kh, stride, padding, dilation)
    out_w = formulas.conv_output_size(w, kw, stride, padding, dilation)
    if out_h < 1 or out_w < 1:
        eh, ew = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
        extent = f" (extent {eh}×{ew} with dilation {dilation})" if dilation > 1 else ""
        raise InvalidArgumentError(
            f"the kernel {kh}×{kw}{extent} is larger than "
            f"the padded input {h + 2 * padding}×{w + 2 * padding} ({h}×{w} + 2·{padding}): "
            f"use a smaller --kernel or --dilation, or more --padding."
        )
    result = ConvWalkthrough(x, k, bias, stride, padding, dilation, [])
    for r in range(out_h):
        out_row: list[Number] = []
        for col in range(out_w):
            rows = [r * stride - padding + i * dilation for i in range(kh)]
            cols = [col * stride - padding + j * dilation for j in range(kw)]
            windows = [[[_at(x[ch], i, j, h, w) for j in cols] for i in rows] for ch in range(c)]
            products = [
                [
                    [a * b for a, b in zip(wr, kr, strict=True)]
                    for wr, kr in zip(windows[ch], k[ch], strict=True)
                ]
                for ch in range(c)
            ]
            sums = [sum(sum(row) for row in p) for p in products]
            total = sum(sums)
            cell = ConvCell(r, col, rows, cols, windows, products, sums, total, bias, total + bias)
            result.cells.append(cell)
            out_row.append(cell.result)
        result.output.append(out_row)
    return result


def _grid_lines(grids: list[Grid], titles: list[str], gap: str = "   ") -> list[str]:
    """Grids side by side under their titles, numbers right-aligned."""
    texts = [[[num(v) for v in row] for row in g] for g in grids]
    widths = [max(len(t) for row in g for t in row) for g in texts]
    blocks = []
    for g, cw, title in zip(texts, widths, titles, strict=True):
        rows = [" ".join(t.rjust(cw) for t in row) for row in g]
        width = max(len(title), *(len(r) for r in rows))
        blocks.append([title.ljust(width)] + [r.rjust(len(rows[0])).ljust(width) for r in rows])
    height = max(len(b) for b in blocks)
    return [
        gap.join(b[i] if i < len(b) else " " * len(b[0]) for b in blocks).rstrip()
        for i in range(height)
    ]


def _span(values: list[int], side: int, what: str) -> str:
    """``"rows 0–2"``, ``"rows 0, 2, 4"``, with the padding among them named."""
    step = values[1] - values[0] if len(values) > 1 else 1
    if step == 1 and len(values) > 2:
        text = f"{what} {num(values[0])}–{num(values[-1])}"
    else:
        text = f"{what} " + ", ".join(num(v) for v in values)
    pads = [v for v in values if v < 0 or v >= side]
    if pads:
        text += f" ({', '.join(num(v) for v in pads)} in the padding)"
    return text


def _sum_text(window: Grid, kernel: Grid) -> str:
    terms = [
        f"{num(a)}·{num(b) if b >= 0 else f'({num(b)})'}"
        for wr, kr in zip(window, kernel, strict=True)
        for a, b in zip(wr, kr, strict=True)
    ]
    return " + ".join(terms)


def render_conv_cell(walk: ConvWalkthrough, cell: ConvCell) -> list[str]:
    _, h, w = walk.input_shape
    c = len(walk.kernel)
    where = f"{_span(cell.rows, h, 'rows')}, {_span(cell.cols, w, 'columns')}"
    lines = [f"out[{cell.row}, {cell.col}]: the kernel over input {where}"]
    indent = "    " if c > 1 else "  "
    for ch in range(c):
        if c > 1:
            lines.append(f"  channel {ch}:")
        grids = [cell.windows[ch], walk.kernel[ch], cell.products[ch]]
        lines += [indent + line for line in _grid_lines(grids, ["window", "kernel", "products"])]
        lines.append(
            f"{indent}{_sum_text(cell.windows[ch], walk.kernel[ch])} = {num(cell.channel_sums[ch])}"
        )
    if c > 1:
        lines.append(
            "  channels: " + " + ".join(num(s) for s in cell.channel_sums) + f" = {num(cell.total)}"
        )
    lines.append(f"  + bias {num(cell.bias)} → out[{cell.row}, {cell.col}] = {num(cell.result)}")
    return lines


def _shown(cells: int, limit: int | None) -> int:
    return cells if limit is None or limit <= 0 else min(cells, limit)


def render_conv(walk: ConvWalkthrough, cells: int | None = CELLS_SHOWN) -> str:
    """The walk-through as text: the input and kernel, ``cells`` output cells in full (all for
    ``None`` or 0), the whole map and the output-size formula with the numbers in."""
    c, h, w = walk.input_shape
    _, kh, kw = walk.kernel_shape
    oh, ow = walk.output_shape
    s, p, d = walk.stride, walk.padding, walk.dilation
    lines = [
        f"convolution: input {c}×{h}×{w}, one {c}×{kh}×{kw} filter, stride {s}, padding {p}"
        + (f", dilation {d}" if d > 1 else "")
        + f" → {oh}×{ow} feature map",
        "out[r, c] = Σ over the window of input × kernel (element by element), + bias "
        "(the kernel is not flipped: deep-learning libraries compute this cross-correlation "
        "and call it convolution)",
    ]
    lines += _grids_or_note("input" + (" (zero padding not shown)" if p else ""), walk.input)
    lines += _grids_or_note("kernel", walk.kernel)
    lines.append(f"bias: {num(walk.bias)}")
    shown = _shown(len(walk.cells), cells)
    lines.append("")
    for cell in walk.cells[:shown]:
        lines += render_conv_cell(walk, cell)
    if shown < len(walk.cells):
        lines.append(
            f"… {len(walk.cells) - shown} more cell(s) not written out (--cells all writes "
            f"every one, --cells N the first N; --json gives them as data)"
        )
    lines.append("")
    lines += _grids_or_note(f"feature map ({oh}×{ow})", [walk.output])
    lines += _size_lines(h, w, kh, kw, s, p, d)
    return "\n".join(lines)


def _grids_or_note(title: str, grids: list[Grid]) -> list[str]:
    h, w = len(grids[0]), len(grids[0][0])
    if max(h, w) > GRID_LIMIT:
        return [f"{title}: {len(grids)}×{h}×{w}, not printed (over {GRID_LIMIT} a side; --json)"]
    if len(grids) == 1:
        return [f"{title}:"] + ["  " + line for line in _grid_lines(grids, [""])[1:]]
    titles = [f"channel {i}" for i in range(len(grids))]
    return [f"{title}:"] + ["  " + line for line in _grid_lines(grids, titles)]


def _size_lines(h: int, w: int, kh: int, kw: int, s: int, p: int, d: int,
                ceil_mode: bool = False) -> list[str]:  # fmt: skip
    """The output-size formula with the numbers in, for the height (and the width if it
    differs), from :func:`explain.output_size`."""
    lines = ["output size:"]
    sides = [("H'", h, kh)] if (h, kh) == (w, kw) else [("H'", h, kh), ("W'", w, kw)]
    for label, n, k in sides:
        worked = explain.output_size(n, k, s, p, d, ceil_mode=ceil_mode)
        lines += ["  " + line.replace("W' =", f"{label} =", 1) for line in worked.lines]
    return lines


# --- pooling ----------------------------------------------------------------------------------


@dataclass
class PoolCell:
    """One output value of a pooling layer, worked out.

    Attributes:
        row, col, rows, cols: the output position and the input rows and columns of its window.
        window: the values in the window.
        result: what the layer outputs here (stochastic: the test-time, eval-mode value).
        kept: max/min: the window position (i, j) of the value kept (the first if tied).
        probabilities: stochastic: p_i = a_i / Σ a_j per window position.
        draw: stochastic: the uniform number u in [0, 1) drawn for this window.
        sampled: stochastic: the window position chosen in training, and ``sample`` its value.
    """

    row: int
    col: int
    rows: list[int]
    cols: list[int]
    window: Grid
    result: Number
    kept: tuple[int, int] | None = None
    probabilities: Grid | None = None
    draw: float | None = None
    sampled: tuple[int, int] | None = None
    sample: Number | None = None


@dataclass
class PoolWalkthrough:
    """A pooling of one H×W channel, every window worked out; ``output`` is what the layer
    gives in eval mode, ``samples`` (stochastic only) one training-mode draw."""

    kind: str
    input: Grid
    size: int
    stride: int
    seed: int
    output: Grid
    samples: Grid | None
    cells: list[PoolCell] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_walkthrough(
    input: Grid, kind: str, size: int, stride: int | None = None, seed: int = 0
) -> PoolWalkthrough:
    """Every window of a ``size``×``size`` pooling with ``stride`` (the size by default) over
    one H×W channel, and what ``kind`` keeps from it.

    ``max``/``min`` keep the largest/smallest value, ``avg`` the mean. ``stochastic``
    (Zeiler & Fergus 2013) gives each window the distribution p_i = a_i / Σ a_j: at test time
    (eval mode) it outputs the expectation Σ p_i a_i; in training one a_i drawn with
    probability p_i, here with the draw :class:`cnnzoo.layers.StochasticPool2d` makes after
    ``torch.manual_seed(seed)`` (inverse CDF: u·Σa falls in one cumulative interval).
    """
    check_choice("--kind", kind, POOL_KINDS)
    check_int("--size", size)
    stride = size if stride is None else stride
    check_int("--stride", stride)
    grid = _shape_of(input, 2)
    if grid is None:
        raise InvalidArgumentError("the pooling input must be a rectangular grid of numbers (H×W).")
    h, w = grid
    if size > min(h, w):
        raise InvalidArgumentError(
            f"the {size}×{size} window is larger than the {h}×{w} input: use --size "
            f"{min(h, w)} or less."
        )
    if kind == "stochastic" and any(v < 0 for row in input for v in row):
        raise InvalidArgumentError(
            "stochastic pooling needs non-negative values (it samples in proportion to them): "
            "use --values random or ramp, or a file without negative numbers."
        )
    out_h = formulas.conv_output_size(h, size, stride)
    out_w = formulas.conv_output_size(w, size, stride)
    windows = [
        [[input[r * stride + i][c * stride + j] for j in range(size)] for i in range(size)]
        for r in range(out_h)
        for c in range(out_w)
    ]
    draws = _uniform_draws(len(windows), seed) if kind == "stochastic" else None
    result = PoolWalkthrough(kind, input, size, stride, seed, [], None)
    for n, window in enumerate(windows):
        r, c = divmod(n, out_w)
        flat = [v for row in window for v in row]
        cell = PoolCell(
            r, c, [r * stride + i for i in range(size)], [c * stride + j for j in range(size)],
            window, 0,
        )  # fmt: skip
        if kind in ("max", "min"):
            best = max(flat) if kind == "max" else min(flat)
            cell.kept = divmod(flat.index(best), size)
            cell.result = best
        elif kind == "avg":
            cell.result = sum(flat) / len(flat)
        else:
            assert draws is not None  # drawn above for stochastic
            total = sum(flat)
            cell.probabilities = [[v / total if total else 0.0 for v in row] for row in window]
            cell.result = sum(v * v for v in flat) / total if total else 0
            cell.draw = draws[n]
            index = _inverse_cdf(flat, draws[n])
            cell.sampled, cell.sample = divmod(index, size), flat[index]
        result.cells.append(cell)
    rows = [result.cells[r * out_w : (r + 1) * out_w] for r in range(out_h)]
    result.output = [[cell.result for cell in row] for row in rows]
    if draws is not None:
        result.samples = [[cell.sample if cell.sample is not None else 0 for cell in row]
                          for row in rows]  # fmt: skip
    return result


def _uniform_draws(count: int, seed: int) -> list[float]:
    """The ``count`` uniform numbers StochasticPool2d draws (``torch.rand_like`` of one value per
    window) after ``torch.manual_seed(seed)``, without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.rand(1, count, 1).flatten().tolist()


def _inverse_cdf(values: list[Number], u: float) -> int:
    """The index whose cumulative interval [Σ_{j<i} a_j, Σ_{j≤i} a_j) holds u·Σa, in float32
    as the layer computes it (so that a draw on an interval's edge goes the same way)."""
    import torch

    window = torch.tensor(values, dtype=torch.float32)
    threshold = torch.tensor(u, dtype=torch.float32) * window.sum()
    index = int((window.cumsum(0) <= threshold).sum())
    return min(index, len(values) - 1)  # a window of zeros: every cumsum ≤ 0, the layer clamps


def render_pool(walk: PoolWalkthrough, cells: int | None = CELLS_SHOWN) -> str:
    h, w = len(walk.input), len(walk.input[0])
    oh, ow = len(walk.output), len(walk.output[0])
    k, s = walk.size, walk.stride
    rule = {
        "max": "keeps the largest value of each window",
        "min": "keeps the smallest value of each window",
        "avg": "keeps the mean of each window",
        "stochastic": "treats each window as a distribution p_i = a_i / Σ a_j: training keeps "
        "one a_i drawn with probability p_i, test time the expectation Σ p_i·a_i = Σ a_i² / Σ a_i",
    }[walk.kind]
    lines = [f"{walk.kind} pooling: {k}×{k} windows, stride {s}, on a {h}×{w} input → {oh}×{ow}"]
    lines.append(f"it {rule}")
    lines += _grids_or_note("input", [walk.input])
    lines.append("")
    shown = _shown(len(walk.cells), cells)
    for cell in walk.cells[:shown]:
        lines += _pool_cell_lines(walk, cell)
    if shown < len(walk.cells):
        lines.append(
            f"… {len(walk.cells) - shown} more window(s) not written out (--cells all writes "
            f"every one; --json gives them as data)"
        )
    lines.append("")
    title = "output at test time (eval mode)" if walk.kind == "stochastic" else "output"
    lines += _grids_or_note(f"{title} ({oh}×{ow})", [walk.output])
    if walk.samples is not None:
        lines += _grids_or_note(
            f"one training-mode draw (torch.manual_seed({walk.seed}), as StochasticPool2d draws)",
            [walk.samples],
        )
    lines += _size_lines(h, w, k, k, s, 0, 1)
    return "\n".join(lines)


def _pool_cell_lines(walk: PoolWalkthrough, cell: PoolCell) -> list[str]:
    h, w = len(walk.input), len(walk.input[0])
    where = f"{_span(cell.rows, h, 'rows')}, {_span(cell.cols, w, 'columns')}"
    head = f"out[{cell.row}, {cell.col}]: window over input {where}"
    flat = [v for row in cell.window for v in row]
    values = ", ".join(num(v) for v in flat)
    if walk.kind in ("max", "min"):
        assert cell.kept is not None  # set for max and min
        i, j = cell.kept
        where_kept = f"input ({cell.rows[i]}, {cell.cols[j]})"
        body = [f"{walk.kind}({values}) = {num(cell.result)}, from {where_kept}"]
    elif walk.kind == "avg":
        body = [f"({' + '.join(num(v) for v in flat)}) / {len(flat)} = {num(cell.result)}"]
    else:
        total = sum(flat)
        assert cell.probabilities is not None and cell.sampled is not None and cell.draw is not None
        probs = [p for row in cell.probabilities for p in row]
        if not total:
            body = ["all zero: every p_i = 0, the layer outputs 0 in training and at test time"]
        else:
            body = [
                f"Σ a = {' + '.join(num(v) for v in flat)} = {num(total)}",
                "p = "
                + ", ".join(
                    f"{num(v)}/{num(total)} = {p:.3f}" for v, p in zip(flat, probs, strict=True)
                ),
                f"test time: Σ p_i·a_i = Σ a² / Σ a = "
                f"({' + '.join(f'{num(v)}²' for v in flat)}) / {num(total)} = "
                f"{num(sum(v * v for v in flat))}/{num(total)} = {num(cell.result)}",
            ]
            cum = []
            acc: Number = 0
            for v in flat:
                acc += v
                cum.append(num(acc))
            i, j = cell.sampled
            body.append(
                f"training draw: u = {cell.draw:.4f}, u·Σa = {cell.draw * total:.3f} falls in "
                f"the cumulative sums {', '.join(cum)} at position {i * walk.size + j} (from 0) "
                f"→ keeps {num(cell.sample if cell.sample is not None else 0)}"
            )
    grid = ["  " + line for line in _grid_lines([cell.window], ["window"])]
    return [head, *grid, *("  " + b for b in body)]


# --- ReLU, softmax, flatten -------------------------------------------------------------------


def parse_numbers(option: str, text: str) -> list[float]:
    """``"-2,0.5,3"`` → ``[-2.0, 0.5, 3.0]``."""
    try:
        values = [float(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidArgumentError(
            f"{option} {text!r} is not a list of numbers: write them with commas, e.g. 2,1,0.1."
        )
    return values


def relu(values: list[float]) -> explain.Explanation:
    """ReLU(x) = max(0, x), element by element."""
    out = [max(0.0, v) for v in values]
    lines = [f"max(0, {num(v)}) = {num(o)}" for v, o in zip(values, out, strict=True)]
    lines.append(
        "negative inputs become 0 (and pass no gradient back: the derivative is 0 there, 1 above "
        "0); positive ones pass unchanged"
    )
    return explain.Explanation(
        "ReLU(x) = max(0, x), applied to each value on its own", lines,
        {f"out{i}": o for i, o in enumerate(out)},
    )  # fmt: skip


def softmax(values: list[float]) -> explain.Explanation:
    """p_i = e^(z_i − m) / Σ_j e^(z_j − m) with m = max z: the same p as e^z_i / Σ e^z_j, whose
    e^z overflows a float for logits above ~88 (float32) or ~709 (float64)."""
    m = max(values)
    shifted = [v - m for v in values]
    exps = [math.exp(s) for s in shifted]
    total = sum(exps)
    probs = [e / total for e in exps]
    lines = [
        f"logits z = {', '.join(num(v) for v in values)}; m = max z = {num(m)}",
        "z − m = " + ", ".join(num(s) for s in shifted),
        "e^(z − m) = "
        + ", ".join(f"e^{num(s)} = {e:.4f}" for s, e in zip(shifted, exps, strict=True)),
        f"Σ e^(z − m) = {' + '.join(f'{e:.4f}' for e in exps)} = {total:.4f}",
        *(
            f"p_{i} = {e:.4f} / {total:.4f} = {p:.4f}"
            for i, (e, p) in enumerate(zip(exps, probs, strict=True))
        ),
        f"Σ p = {sum(probs):.4f}; the largest logit gets the largest probability (class "
        f"{values.index(m)})",
        "why subtract m: e^z_i / Σ e^z_j = e^(z_i − m) / Σ e^(z_j − m) for any m (e^−m cancels), "
        "and with m = max z every exponent is ≤ 0, so nothing overflows (e^1000 is inf in "
        "float64, e^89 in float32) and the largest term is exactly 1",
    ]
    return explain.Explanation(
        "softmax: logits → probabilities, p_i = e^z_i / Σ_j e^z_j", lines,
        {f"p{i}": p for i, p in enumerate(probs)},
    )  # fmt: skip


def flatten(shape: tuple[int, int, int]) -> explain.Explanation:
    """A C×H×W map to a vector of C·H·W values, channel by channel, each row by row: entry
    (c, h, w) goes to index c·H·W + h·W + w (``torch.flatten(x, 1)``'s order)."""
    c, h, w = shape
    for name, v in zip(("C", "H", "W"), shape, strict=True):
        check_int(f"--input {name}", v)
    grids, _, _ = make_values("ramp", shape)
    lines = [f"the input, values chosen equal to their flattened index ({c}×{h}×{w}):"]
    lines += ["  " + line for line in _grids_or_note("", grids)[1:]]
    vector = [v for g in grids for row in g for v in row]
    shown = vector if len(vector) <= 64 else vector[:64]
    more = "" if len(vector) <= 64 else f", … ({len(vector) - 64} more)"
    lines.append(f"flattened: [{', '.join(num(v) for v in shown)}{more}]")
    lines.append(
        f"(c, h, w) → c·H·W + h·W + w = c·{h * w} + h·{w} + w; e.g. ({c - 1}, {h - 1}, {w - 1}) "
        f"→ {c - 1}·{h * w} + {h - 1}·{w} + {w - 1} = {c * h * w - 1}"
    )
    lines.append(
        f"length C·H·W = {c}·{h}·{w} = {c * h * w}: the input size of the first fully-connected "
        "layer; flattening moves no value, it only forgets where each one was"
    )
    return explain.Explanation(
        f"flatten: a {c}×{h}×{w} map → a vector of {c * h * w} values", lines,
        {"length": c * h * w},
    )  # fmt: skip
