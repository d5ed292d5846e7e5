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
    kernel: int | tuple[int, int],
    groups: int = 1,
    bias: bool = True,
) -> int:
    """Parameters of a convolution: K·(F²·C/groups + 1) with ``bias``, K·F²·C/groups without."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return out_chans * (kh * kw * in_chans // groups + int(bias))


def conv_macs(
    in_chans: int,
    out_chans: int,
    kernel: int | tuple[int, int],
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
