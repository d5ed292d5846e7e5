"""The textbook examples, worked with the user's numbers (``cnnzoo explain ...``).

Each function returns an :class:`Explanation`: the lines to print, with every formula written
out and the numbers substituted, and the values themselves for programs and tests. Weights are
counted without biases, as the textbooks do for these comparisons; a bias adds one per filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnzoo.analysis import formulas
from cnnzoo.checks import check_int
from cnnzoo.errors import InvalidArgumentError


@dataclass
class Explanation:
    """A worked example: printable lines and the numbers they arrive at."""

    title: str
    lines: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.title, *("  " + line for line in self.lines)])


def _positive(**values: int) -> None:
    for name, value in values.items():
        check_int(f"--{name}", value)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%"


def _fewer(ratio: float) -> str:
    """``ratio`` = new / old as words: ``"9.0× fewer"``, ``"1.11× more"`` or ``"as many"``
    (two decimals near 1, where one would read 1.0× for a real difference)."""
    if ratio == 1:
        return "as many"
    times = 1 / ratio if ratio < 1 else ratio
    digits = 1 if times >= 1.05 else 2
    return f"{times:,.{digits}f}× {'fewer' if ratio < 1 else 'more'}"


def bottleneck(in_chans: int, mid_chans: int, out_chans: int, kernel: int) -> Explanation:
    """A K×K convolution C_in → C_out against a 1×1 reduction to C_mid followed by the K×K."""
    _positive(**{"in": in_chans, "mid": mid_chans, "out": out_chans, "kernel": kernel})
    direct = formulas.conv_params(in_chans, out_chans, kernel, bias=False)
    reduce = formulas.conv_params(in_chans, mid_chans, 1, bias=False)
    then = formulas.conv_params(mid_chans, out_chans, kernel, bias=False)
    k, c_in, mid, c_out = kernel, in_chans, mid_chans, out_chans
    return Explanation(
        f"1×1 bottleneck: {k}×{k} convolution {c_in} → {c_out} channels, direct or through {mid}",
        [
            f"direct:     {k}·{k}·{c_in}·{c_out} = {direct:,} weights",
            f"bottleneck: 1·1·{c_in}·{mid} + {k}·{k}·{mid}·{c_out} = {reduce:,} + {then:,} "
            f"= {reduce + then:,} weights",
            f"the bottleneck needs {_pct(reduce + then, direct)} of the weights, and the same "
            f"share of multiply-adds at any output size (each weight is used once per output "
            f"position)",
        ],
        {"direct": direct, "bottleneck": reduce + then, "ratio": (reduce + then) / direct},
    )


def separable(in_chans: int, out_chans: int, kernel: int, size: int) -> Explanation:
    """A standard K×K convolution M → N against a depthwise K×K then a pointwise 1×1
    (MobileNet §3.1), on a ``size`` × ``size`` output map."""
    _positive(**{"in": in_chans, "out": out_chans, "kernel": kernel, "size": size})
    m, n, k, s = in_chans, out_chans, kernel, size
    std = formulas.conv_macs(m, n, k, s, s)
    dw = formulas.conv_macs(m, m, k, s, s, groups=m)
    pw = formulas.separable_macs(m, n, k, s, s) - dw
    std_w = formulas.conv_params(m, n, k, bias=False)
    sep_w = formulas.conv_params(m, m, k, groups=m, bias=False) + formulas.conv_params(
        m, n, 1, bias=False
    )
    ratio = 1 / n + 1 / k**2
    return Explanation(
        f"depthwise-separable vs standard convolution: {k}×{k}, M = {m} → N = {n} channels, "
        f"D_F = {s} output",
        [
            f"standard:  D_K²·M·N·D_F² = {k}²·{m}·{n}·{s}² = {std:,} multiply-adds, "
            f"{std_w:,} weights",
            f"depthwise: D_K²·M·D_F² = {k}²·{m}·{s}² = {dw:,}",
            f"pointwise: M·N·D_F² = {m}·{n}·{s}² = {pw:,}",
            f"separable: {dw:,} + {pw:,} = {dw + pw:,} multiply-adds, {sep_w:,} weights",
            f"ratio: (D_K²·M·D_F² + M·N·D_F²) / (D_K²·M·N·D_F²) = 1/N + 1/D_K² "
            f"= 1/{n} + 1/{k**2} = {ratio:.4f} ({_fewer(ratio)} multiply-adds)",
        ],
        {"standard": std, "depthwise": dw, "pointwise": pw, "separable": dw + pw, "ratio": ratio},
    )


def fc_vs_conv(width: int, height: int, chans: int, out: int, kernel: int) -> Explanation:
    """A fully-connected layer of ``out`` units on a W×H×C image against a convolution of
    ``out`` K×K filters, which shares its weights across positions."""
    _positive(width=width, height=height, channels=chans, out=out, kernel=kernel)
    fc = formulas.linear_params(width * height * chans, out)
    conv = formulas.conv_params(chans, out, kernel)
    return Explanation(
        f"dense vs convolutional layer on a {width}×{height}×{chans} image, {out} outputs",
        [
            f"fully connected: every unit sees every input: ({width}·{height}·{chans} + 1)·{out} "
            f"= {fc:,} parameters",
            f"convolution: {out} filters of {kernel}×{kernel}×{chans}, shared across positions: "
            f"{out}·({kernel}²·{chans} + 1) = {conv:,} parameters",
            f"the convolution needs {_fewer(conv / fc)} parameters, and its count does not "
            f"grow with the image",
        ],
        {"fc": fc, "conv": conv, "ratio": fc / conv},
    )


def output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
    ceil_mode: bool = False, pool: bool = False,
) -> Explanation:  # fmt: skip
    """W' = ⌊(W − F_eff + 2P)/S⌋ + 1 (⌈⌉ with ``ceil_mode``), F_eff = D·(F − 1) + 1.

    ``pool`` (implied by ``ceil_mode``, which only pooling layers have) refuses what PyTorch's
    pooling layers refuse: padding over half the kernel, P > ⌊F/2⌋.
    """
    _positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    check_int("--padding", padding, minimum=0)
    if (pool or ceil_mode) and padding > kernel // 2:
        # torch's check reads the kernel side, not the dilated extent (tested against it).
        raise InvalidArgumentError(
            f"--padding {padding} is more than half the {kernel}-wide pooling window, which "
            f"PyTorch's pooling layers refuse (P ≤ ⌊F/2⌋ = {kernel // 2}): use --padding "
            f"{kernel // 2} or less."
        )
    out = formulas.conv_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    f = kernel if dilation == 1 else dilation * (kernel - 1) + 1
    lines = []
    if dilation != 1:
        lines.append(f"dilated kernel extent: D·(F − 1) + 1 = {dilation}·({kernel} − 1) + 1 = {f}")
    left, right = ("⌈", "⌉") if ceil_mode else ("⌊", "⌋")
    worked = formulas.output_size_formula(size, kernel, stride, padding, dilation, ceil_mode)
    lines.append(f"W' = {left}(W − F + 2P)/S{right} + 1 = {worked}")
    rounded = formulas.ceil_rounded_size(size, kernel, stride, padding, dilation)
    if ceil_mode and out >= 1 and rounded > out:
        start = (rounded - 1) * stride
        lines.append(
            f"rounding up gives {rounded} windows, but the last would start at "
            f"({rounded} − 1)·{stride} = {start} of the padded input, at or past W + P = "
            f"{size} + {padding} = {size + padding}, where the right padding begins: it would "
            f"read no input"
        )
        lines.append(
            f"so PyTorch drops it (the last window must start inside the left padding or the "
            f"input): {rounded} − 1 = {out}"
        )
    if out < 1:
        lines.append(
            f"the window does not fit: this layer needs an input of at least "
            f"{f - 2 * padding} pixels"
        )
    elif (size - f + 2 * padding) % stride and not ceil_mode:
        lines.append(
            f"({size} − {f} + 2·{padding}) is not a multiple of {stride}: the last "
            f"{(size - f + 2 * padding) % stride} row(s) and column(s) of the padded input are "
            f"never covered"
        )
    kind = "pooling window" if pool or ceil_mode else "window"
    return Explanation(
        f"output size of a {kernel}×{kernel} {kind}, stride {stride}, padding {padding} on {size}",
        lines,
        {"output": out},
    )
