"""The textbook formulas as plain functions.

Conventions: ``macs`` counts one fused multiply-add; ``flops = 2 * macs``. Bias additions are
not counted as MACs (torchvision's ``_ops`` and the papers' "multiply-adds" leave them out).
"""

from __future__ import annotations


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output side of a convolution or pooling layer: W' = ⌊(W − F_eff + 2P)/S⌋ + 1.

    ``F_eff = dilation·(F − 1) + 1`` is the dilated kernel's extent. With ``ceil_mode`` the
    division rounds up (so a 2-pixel input still gives one 3×3/2 window), except that the last
    window must start inside the left-padded input, as PyTorch's pooling layers require. A
    result below 1 means the layer cannot run on that input.
    """
    extent = dilation * (kernel - 1) + 1
    span = size + 2 * padding - extent
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    return max(out, 0)


def conv_params(
    in_chans: int,
    out_chans: int,
    kernel: int | tuple[int, ...],
    groups: int = 1,
    bias: bool = True,
) -> int:
    """Parameters of a convolution: K·(F²·C/groups + 1) with ``bias``, K·F²·C/groups without."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return out_chans * (kh * kw * in_chans // groups + int(bias))


def conv_macs(
    in_chans: int,
    out_chans: int,
    kernel: int | tuple[int, ...],
    out_h: int,
    out_w: int,
    groups: int = 1,
) -> int:
    """Multiply-adds of a convolution: every output value needs F²·C/groups of them."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return out_chans * out_h * out_w * kh * kw * in_chans // groups


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a fully-connected layer: out·(in + 1) with bias."""
    return out_features * (in_features + int(bias))


def linear_macs(in_features: int, out_features: int, rows: int = 1) -> int:
    """Multiply-adds of a fully-connected layer applied to ``rows`` vectors."""
    return rows * in_features * out_features


def separable_macs(in_chans: int, out_chans: int, kernel: int, out_h: int, out_w: int) -> int:
    """Multiply-adds of a depthwise-separable convolution (MobileNet §3.1): a K×K depthwise
    convolution, D_K²·M·D_F², then a 1×1 pointwise one, M·N·D_F². Against a standard K×K
    convolution (D_K²·M·N·D_F²) the ratio is 1/N + 1/D_K²."""
    depthwise = conv_macs(in_chans, in_chans, kernel, out_h, out_w, groups=in_chans)
    return depthwise + conv_macs(in_chans, out_chans, 1, out_h, out_w)


def output_size_formula(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> str:
    """:func:`conv_output_size` written out with the numbers substituted.

    For example ``"⌊(224 − 11 + 2·2)/4⌋ + 1 = 55"``; a dilated kernel shows its extent
    ``d·(F − 1) + 1`` and ``ceil_mode`` rounds up with ⌈ ⌉, then takes one off where the last
    window would start past the input: ``"⌈(5 − 2 + 2·1)/2⌉ + 1 = 4 − 1 = 3"``.
    """
    extent = f"({dilation}·({kernel} − 1) + 1)" if dilation > 1 else f"{kernel}"
    lo, hi = ("⌈", "⌉") if ceil_mode else ("⌊", "⌋")
    out = conv_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    text = f"{lo}({size} − {extent} + 2·{padding})/{stride}{hi} + 1"
    rounded = ceil_rounded_size(size, kernel, stride, padding, dilation) if ceil_mode else out
    # Written as "= 4 − 1 = 3" where the last window is dropped, so that every "=" is true.
    return f"{text} = {rounded} − 1 = {out}" if rounded == out + 1 else f"{text} = {out}"


def ceil_rounded_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                      dilation: int = 1) -> int:  # fmt: skip
    """⌈(W − F_eff + 2P)/S⌉ + 1 before ``ceil_mode``'s rule drops a last window that would start
    in the right padding (at or past W + P); :func:`conv_output_size` is the size after it."""
    extent = dilation * (kernel - 1) + 1
    return -(-(size + 2 * padding - extent) // stride) + 1


def adaptive_pool_window(size: int, out: int) -> tuple[int, int]:
    """Largest window and smallest step of an adaptive pool from ``size`` to ``out`` cells.

    Cell ``i`` pools ``[⌊i·size/out⌋, ⌈(i + 1)·size/out⌉)``, so windows can differ by one and
    overlap; the receptive-field recurrence uses the largest window and ``⌊size/out⌋`` as step.
    """
    window = max(-(-(i + 1) * size // out) - i * size // out for i in range(out))
    return window, max(size // out, 1)


def receptive_field(
    size: int, jump: int, kernel: int, stride: int = 1, dilation: int = 1
) -> tuple[int, int]:
    """One step of the receptive-field recurrence: ``r' = r + (F − 1)·d·j`` and ``j' = j·S``.

    ``size`` (r) is the side of the input region one unit sees and ``jump`` (j) the distance in
    input pixels between neighbouring units, both before the layer; the input has r = j = 1.
    """
    return size + (kernel - 1) * dilation * jump, jump * stride


def _kernel_text(kernel: int | tuple[int, ...]) -> str:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return f"{kh}²" if kh == kw else f"{kh}·{kw}"


def conv_params_formula(
    in_chans: int,
    out_chans: int,
    kernel: int | tuple[int, ...],
    groups: int = 1,
    bias: bool = True,
) -> str:
    """:func:`conv_params` written out, e.g. ``"64·(11²·3 + 1) = 23,296"``.

    A grouped convolution shows ``C/groups`` (``"256·(5²·96/2 + 1) = 307,456"``), one without
    bias drops the ``+ 1`` (``"64·3²·64 = 36,864"``).
    """
    reads = f"{_kernel_text(kernel)}·{in_chans}" + (f"/{groups}" if groups > 1 else "")
    total = conv_params(in_chans, out_chans, kernel, groups, bias)
    text = f"{out_chans}·({reads} + 1)" if bias else f"{out_chans}·{reads}"
    return f"{text} = {total:,}"


def conv_macs_formula(
    in_chans: int,
    out_chans: int,
    kernel: int | tuple[int, ...],
    out_h: int,
    out_w: int,
    groups: int = 1,
    batch: int = 1,
) -> str:
    """:func:`conv_macs` written out: K·H'·W'·F²·C/groups (times the batch when above 1)."""
    reads = f"{_kernel_text(kernel)}·{in_chans}" + (f"/{groups}" if groups > 1 else "")
    lead = f"{batch}·" if batch > 1 else ""
    total = batch * conv_macs(in_chans, out_chans, kernel, out_h, out_w, groups)
    return f"{lead}{out_chans}·{out_h}·{out_w}·{reads} = {total:,}"


def linear_params_formula(in_features: int, out_features: int, bias: bool = True) -> str:
    """:func:`linear_params` written out, e.g. ``"10·(84 + 1) = 850"``."""
    total = linear_params(in_features, out_features, bias)
    text = f"{out_features}·({in_features} + 1)" if bias else f"{out_features}·{in_features}"
    return f"{text} = {total:,}"


def linear_macs_formula(in_features: int, out_features: int, rows: int = 1) -> str:
    """:func:`linear_macs` written out: rows·in·out (rows shown when above 1)."""
    lead = f"{rows}·" if rows > 1 else ""
    total = linear_macs(in_features, out_features, rows)
    return f"{lead}{in_features}·{out_features} = {total:,}"
