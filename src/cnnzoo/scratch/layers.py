"""The layers of a CNN in NumPy, each a forward function and its backward pass.

Every ``*_forward`` returns ``(out, cache)``; the matching ``*_backward(dout, cache)`` takes the
gradient of the loss with respect to ``out`` and returns the gradients with respect to the
inputs and parameters, in the order of the forward's arguments. Arrays are ``(N, C, H, W)`` for
images and ``(N, D)`` for vectors, as in torch. The arithmetic is written to be read: one
formula per line, shapes in comments. Convolution and pooling use *im2col*: every window of the
input is copied into a row of a matrix, so that a convolution is one matrix product.

The docstrings give the formula each function computes; tests/test_scratch.py checks every
forward and gradient against torch autograd in float64 (within 1e-10, relative).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Cache = dict[str, Any]


def output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """The output side of a convolution or pooling: ``⌊(W + 2P − D(F − 1) − 1) / S⌋ + 1``
    (with D = 1 the textbook ``(W − F + 2P) / S + 1``)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _windows(
    x: np.ndarray, kernel: int, stride: int, padding: int, dilation: int, fill: float = 0.0
) -> np.ndarray:
    """Every window of ``x`` (N, C, H, W) as a view (N, C, H', W', F, F): ``out[n, c, i, j]``
    is the F×F window whose top-left corner is at (i·S − P, j·S − P), taking every D-th pixel.
    Padding pixels hold ``fill`` (0 for convolution, −∞ for max pooling)."""
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    span = dilation * (kernel - 1) + 1  # the window's extent on the input
    # Every span×span block at every offset, then every S-th offset and every D-th pixel.
    windows = sliding_window_view(xp, (span, span), axis=(2, 3))
    return windows[:, :, ::stride, ::stride, ::dilation, ::dilation]


def _col2im(
    dwin: np.ndarray, x_shape: tuple[int, ...], stride: int, padding: int, dilation: int
) -> np.ndarray:
    """The adjoint of :func:`_windows`: add each window's gradient (N, C, H', W', F, F) back
    to the input pixel it was copied from; a pixel in several windows gets their sum."""
    n, c, h, w = x_shape
    _, _, out_h, out_w, k, _ = dwin.shape
    p, s, d = padding, stride, dilation
    dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=dwin.dtype)
    # One strided slice per kernel position (F² additions of a whole map) rather than one per
    # window: the same sums, in vectorised NumPy.
    for u in range(k):
        rows = slice(u * d, u * d + s * (out_h - 1) + 1, s)  # the pixels kernel row u read
        for v in range(k):
            cols = slice(v * d, v * d + s * (out_w - 1) + 1, s)
            dxp[:, :, rows, cols] += dwin[:, :, :, :, u, v]
    return dxp[:, :, p : p + h, p : p + w]


# --- convolution -----------------------------------------------------------------------------


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> tuple[np.ndarray, Cache]:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    ``y[n, f, i, j] = b[f] + Σ_c Σ_u Σ_v w[f, c, u, v] · x_pad[n, c, i·S + u·D, j·S + v·D]``

    computed as one matrix product: the windows of ``x`` as rows of ``cols`` (N·H'·W', C·F·F)
    times the filters as columns (C·F·F, K). Output side ``⌊(W + 2P − D(F − 1) − 1)/S⌋ + 1``.

    Args:
        x: input (N, C, H, W).
        weight: filters (K, C, F, F).
        bias: (K,) or None.
        stride, padding, dilation: S, P (zeros on every side), D.
    """
    n = x.shape[0]
    k, c, f, _ = weight.shape
    windows = _windows(x, f, stride, padding, dilation)  # (N, C, H', W', F, F)
    out_h, out_w = windows.shape[2:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, c * f * f)
    w_mat = weight.reshape(k, c * f * f)
    y = cols @ w_mat.T  # (N·H'·W', K)
    if bias is not None:
        y = y + bias
    y = y.reshape(n, out_h, out_w, k).transpose(0, 3, 1, 2)  # (N, K, H', W')
    cache = {"x_shape": x.shape, "cols": cols, "weight": weight, "has_bias": bias is not None,
             "stride": stride, "padding": padding, "dilation": dilation}  # fmt: skip
    return np.ascontiguousarray(y), cache


def conv2d_backward(
    dy: np.ndarray, cache: Cache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward`, from ``G = ∂L/∂y`` as a matrix (N·H'·W', K):

    - ``∂L/∂w = Gᵀ · cols`` (each filter weight sums input × output gradient over its windows),
    - ``∂L/∂b[f] = Σ_{n,i,j} G[n, f, i, j]``,
    - ``∂L/∂x = col2im(G · W)``: each window's gradient added back to the pixels it read.

    Returns:
        ``(dx, dweight, dbias)``; ``dbias`` is None when the forward had no bias.
    """
    weight = cache["weight"]
    k, c, f, _ = weight.shape
    n, _, out_h, out_w = dy.shape
    g = dy.transpose(0, 2, 3, 1).reshape(n * out_h * out_w, k)  # (N·H'·W', K)
    dweight = (g.T @ cache["cols"]).reshape(weight.shape)
    dbias = g.sum(axis=0) if cache["has_bias"] else None
    dcols = g @ weight.reshape(k, c * f * f)  # (N·H'·W', C·F·F)
    dwin = dcols.reshape(n, out_h, out_w, c, f, f).transpose(0, 3, 1, 2, 4, 5)
    dx = _col2im(dwin, cache["x_shape"], cache["stride"], cache["padding"], cache["dilation"])
    return dx, dweight, dbias


# --- pooling ---------------------------------------------------------------------------------

POOL_KINDS = ("max", "avg", "min", "stochastic")


def pool2d_forward(
    x: np.ndarray,
    kind: str,
    kernel: int,
    stride: int | None = None,
    padding: int = 0,
    *,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, Cache]:
    """Pooling over F×F windows with stride S (default F) and padding P; for each window a:

    - ``max``: ``y = max_i a_i`` (padding counts as −∞, as in torch);
    - ``min``: ``y = min_i a_i = −max_i(−a_i)``;
    - ``avg``: ``y = (1/F²) Σ_i a_i`` (padding zeros count, torch's ``count_include_pad=True``);
    - ``stochastic`` (Zeiler & Fergus 2013, for a_i ≥ 0), with ``p_i = a_i / Σ_j a_j``:
      in training ``y = a_k`` with k drawn with probability p_k (needs ``rng``); in eval the
      probability-weighted average ``y = Σ_i p_i a_i = Σ a_i² / Σ a_i`` (0 for a window of 0s).
    """
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pooling {kind!r}: choose one of {', '.join(POOL_KINDS)}")
    stride = kernel if stride is None else stride
    fill = {"max": -np.inf, "min": np.inf}.get(kind, 0.0)
    n, c = x.shape[:2]
    windows = _windows(x, kernel, stride, padding, 1, fill)  # (N, C, H', W', F, F)
    out_h, out_w = windows.shape[2:4]
    a = windows.reshape(n, c, out_h, out_w, kernel * kernel)  # one row per window
    cache: Cache = {"kind": kind, "x_shape": x.shape, "kernel": kernel, "stride": stride,
                    "padding": padding}  # fmt: skip
    if kind in ("max", "min"):
        index = a.argmax(axis=-1) if kind == "max" else a.argmin(axis=-1)
        y = np.take_along_axis(a, index[..., None], axis=-1)[..., 0]
        cache["index"] = index
    elif kind == "avg":
        y = a.mean(axis=-1)
    elif training:
        if rng is None:
            raise ValueError("stochastic pooling in training needs rng (a numpy Generator)")
        total = a.sum(axis=-1, keepdims=True)
        # Inverse CDF: index k is drawn when cumsum[k−1] ≤ u < cumsum[k], with probability
        # a_k / total; a zero entry is never drawn (an all-zero window gives 0).
        u = rng.random(total.shape) * total
        index = np.minimum((np.cumsum(a, axis=-1) <= u).sum(axis=-1), kernel * kernel - 1)
        y = np.take_along_axis(a, index[..., None], axis=-1)[..., 0]
        cache["index"] = index
    else:
        s1 = a.sum(axis=-1)
        s2 = (a * a).sum(axis=-1)
        safe = np.where(s1 > 0, s1, 1.0)
        y = np.where(s1 > 0, s2 / safe, 0.0)
        cache.update(a=a, s1=safe, s2=s2, nonzero=s1 > 0)
    return y, cache


def pool2d_backward(dy: np.ndarray, cache: Cache) -> np.ndarray:
    """Gradient of :func:`pool2d_forward` with respect to its input:

    - ``max``/``min``/stochastic in training: ``∂y/∂a_i = 1`` for the element the window kept
      (the argmax, the argmin, the drawn one), 0 for the others;
    - ``avg``: ``∂y/∂a_i = 1/F²`` for every element;
    - stochastic in eval: ``∂y/∂a_i = (2 a_i Σa − Σa²) / (Σa)²``.

    Overlapping windows (S < F) add their contributions to the pixels they share.
    """
    kind, k = cache["kind"], cache["kernel"]
    if kind == "avg":
        dwin = np.broadcast_to(dy[..., None] / (k * k), (*dy.shape, k * k))
    elif "index" in cache:
        dwin = np.zeros((*dy.shape, k * k), dtype=dy.dtype)
        np.put_along_axis(dwin, cache["index"][..., None], dy[..., None], axis=-1)
    else:
        a, s1, s2 = cache["a"], cache["s1"][..., None], cache["s2"][..., None]
        local = np.where(cache["nonzero"][..., None], (2 * a * s1 - s2) / (s1 * s1), 0.0)
        dwin = dy[..., None] * local
    dwin = dwin.reshape(*dy.shape, k, k)  # (N, C, H', W', F, F)
    return _col2im(dwin, cache["x_shape"], cache["stride"], cache["padding"], 1)


# --- activations -----------------------------------------------------------------------------

ACTIVATIONS = ("relu", "tanh", "scaled_tanh")
# LeCun et al. 1998, Appendix A: f(a) = A tanh(S a) with A = 1.7159, S = 2/3.
SCALED_TANH = (1.7159, 2.0 / 3.0)


def activation_forward(x: np.ndarray, kind: str) -> tuple[np.ndarray, Cache]:
    """``relu``: ``y = max(0, x)``; ``tanh``: ``y = tanh x``; ``scaled_tanh``:
    ``y = A tanh(S x)``, A = 1.7159, S = 2/3 (LeNet-5's squashing function)."""
    if kind == "relu":
        return np.maximum(x, 0.0), {"kind": kind, "positive": x > 0}
    if kind == "tanh":
        y = np.tanh(x)
        return y, {"kind": kind, "t": y}
    if kind == "scaled_tanh":
        amp, slope = SCALED_TANH
        t = np.tanh(slope * x)
        return amp * t, {"kind": kind, "t": t}
    raise ValueError(f"unknown activation {kind!r}: choose one of {', '.join(ACTIVATIONS)}")


def activation_backward(dy: np.ndarray, cache: Cache) -> np.ndarray:
    """``relu``: ``∂y/∂x = 1 if x > 0 else 0`` (torch's choice at 0); ``tanh``:
    ``1 − tanh²x``; ``scaled_tanh``: ``A·S·(1 − tanh²(S x))``."""
    if cache["kind"] == "relu":
        return dy * cache["positive"]
    t = cache["t"]
    if cache["kind"] == "tanh":
        return dy * (1.0 - t * t)
    amp, slope = SCALED_TANH
    return dy * amp * slope * (1.0 - t * t)


# --- linear, flatten, loss -------------------------------------------------------------------


def linear_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> tuple[np.ndarray, Cache]:
    """Fully connected layer: ``y = x Wᵀ + b``, x (N, D), W (M, D), b (M,) → y (N, M)."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, {"x": x, "weight": weight, "has_bias": bias is not None}


def linear_backward(
    dy: np.ndarray, cache: Cache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``∂L/∂x = G W``, ``∂L/∂W = Gᵀ x``, ``∂L/∂b = Σ_n G[n]`` for ``G = ∂L/∂y`` (N, M)."""
    dx = dy @ cache["weight"]
    dweight = dy.T @ cache["x"]
    dbias = dy.sum(axis=0) if cache["has_bias"] else None
    return dx, dweight, dbias


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, Cache]:
    """``(N, C, H, W) → (N, C·H·W)`` in C order (torch's ``flatten(x, 1)``)."""
    return x.reshape(x.shape[0], -1), {"shape": x.shape}


def flatten_backward(dy: np.ndarray, cache: Cache) -> np.ndarray:
    """The gradient reshaped back to the input's shape: flattening moves no value."""
    return dy.reshape(cache["shape"])


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch and its gradient with respect to the logits.

    ``p = softmax(z)``, ``p_k = e^{z_k − max z} / Σ_j e^{z_j − max z}`` (subtracting the max
    changes nothing but keeps e^z finite); ``L = −(1/N) Σ_n log p[n, y_n]``;
    ``∂L/∂z = (p − onehot(y)) / N``.

    Args:
        logits: (N, K).
        labels: (N,) class indices.

    Returns:
        ``(loss, dlogits)``.
    """
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(n), labels].mean()
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), dlogits / n


# --- batch normalisation ---------------------------------------------------------------------


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, Cache]:
    """Batch normalisation per channel (axis 1) of (N, C) or (N, C, H, W) inputs.

    ``y = γ (x − μ) / √(σ² + ε) + β``, where in training μ and σ² are the batch's mean and
    biased variance over every axis but the channel's (m values per channel), and the running
    statistics are updated in place as torch does:
    ``running_mean ← (1 − momentum) running_mean + momentum μ``,
    ``running_var ← (1 − momentum) running_var + momentum σ² m/(m − 1)`` (unbiased).
    In eval μ and σ² are the running statistics.
    """
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcasts a (C,) vector over the channel axis
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        m = x.size // x.shape[1]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * m / (m - 1)
    else:
        mean, var = running_mean.copy(), running_var.copy()
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    cache = {"x_hat": x_hat, "inv_std": inv_std, "gamma": gamma, "training": training,
             "axes": axes, "shape": shape}  # fmt: skip
    return y, cache


def batchnorm_backward(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batchnorm_forward` with ``x̂ = (x − μ)/√(σ² + ε)``:

    ``∂L/∂γ = Σ dy · x̂``, ``∂L/∂β = Σ dy`` (sums over all but the channel axis). In training
    μ and σ² depend on x, which gives, with m values per channel,
    ``∂L/∂x = γ/√(σ² + ε) · (dy − mean(dy) − x̂ · mean(dy · x̂))``; in eval they are
    constants and ``∂L/∂x = γ/√(σ² + ε) · dy``.

    Returns:
        ``(dx, dgamma, dbeta)``.
    """
    axes, shape, x_hat = cache["axes"], cache["shape"], cache["x_hat"]
    dgamma = (dy * x_hat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    scale = (cache["gamma"] * cache["inv_std"]).reshape(shape)
    if not cache["training"]:
        return scale * dy, dgamma, dbeta
    mean_dy = dy.mean(axis=axes, keepdims=True)
    mean_dy_xhat = (dy * x_hat).mean(axis=axes, keepdims=True)
    return scale * (dy - mean_dy - x_hat * mean_dy_xhat), dgamma, dbeta
