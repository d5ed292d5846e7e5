"""LeNet-5 built from :mod:`cnnzoo.scratch.layers`, layer for layer as cnnzoo's ``lenet5``
(``cnnzoo/models/lenet.py``): C1 5×5 conv → act → S2 2×2 pool → C3 5×5 conv (optionally the
paper's sparse connection table) → act → S4 2×2 pool → C5 5×5 conv → act → flatten → F6 linear
→ act → output linear. Parameters are named as the torch model's ``state_dict`` keys
(``c1.weight``, …, ``output.bias``), so weights move between the two as plain arrays and both
compute the same logits and gradients (tests/test_scratch.py, float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from cnnzoo.scratch import layers as L

Arrays = dict[str, np.ndarray]

# The convolutions in the order of the forward pass; S2 and S4 follow the first two.
CONVS = ("c1", "c3", "c5")


def c3_mask(table: Sequence[Sequence[int]], in_maps: int) -> np.ndarray:
    """The (out, in, 1, 1) 0/1 mask of a connection table: ``mask[o, i] = 1`` when C3 map o
    reads S2 map i. The convolution uses ``w · mask``, so ``∂L/∂w = mask · ∂L/∂(w · mask)``:
    unconnected weights get no gradient."""
    mask = np.zeros((len(table), in_maps, 1, 1))
    for out_map, inputs in enumerate(table):
        mask[out_map, list(inputs)] = 1.0
    return mask


def init_params(
    rng: np.random.Generator,
    *,
    in_chans: int = 1,
    num_classes: int = 10,
    widths: tuple[int, int, int, int] = (6, 16, 120, 84),
    kernel: int = 5,
    dtype: DTypeLike = np.float32,
) -> Arrays:
    """Fresh LeNet-5 parameters, drawn as torch's default initialisation draws them: every
    weight and bias uniform in ``±1/√F`` for a unit with fan-in F (C·k·k for a convolution,
    D for a linear layer)."""
    c1, c3, c5, f6 = widths
    shapes = {
        "c1": ((c1, in_chans, kernel, kernel), in_chans * kernel * kernel),
        "c3": ((c3, c1, kernel, kernel), c1 * kernel * kernel),
        "c5": ((c5, c3, kernel, kernel), c3 * kernel * kernel),
        "f6": ((f6, c5), c5),
        "output": ((num_classes, f6), f6),
    }
    params: Arrays = {}
    for name, (shape, fan_in) in shapes.items():
        bound = 1.0 / np.sqrt(fan_in)
        params[f"{name}.weight"] = rng.uniform(-bound, bound, shape).astype(dtype)
        params[f"{name}.bias"] = rng.uniform(-bound, bound, shape[0]).astype(dtype)
    return params


class LeNet5:
    """The network; ``params`` is a dict of arrays named as the torch model's state_dict.

    Args:
        params: ``c1.weight`` … ``output.bias`` (see :func:`init_params`).
        act: ``"tanh"`` (cnnzoo's default), ``"scaled_tanh"`` or ``"relu"``.
        pool: S2/S4 pooling: ``"avg"`` (default), ``"max"``, ``"min"`` or ``"stochastic"``.
        c3_table: for each C3 map the S2 maps it reads (``cnnzoo.models.lenet.C3_TABLE``), or
            None for full connections.
    """

    def __init__(
        self,
        params: Arrays,
        *,
        act: str = "tanh",
        pool: str = "avg",
        c3_table: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.params = params
        self.act = act
        self.pool = pool
        c3 = params["c3.weight"]
        self.mask = None if c3_table is None else c3_mask(c3_table, c3.shape[1]).astype(c3.dtype)
        self.training = False
        self.rng = np.random.default_rng(0)  # stochastic pooling's draws in training
        self._caches: list[tuple[str, L.Cache]] = []

    def _weight(self, name: str) -> np.ndarray:
        w = self.params[f"{name}.weight"]
        return w * self.mask if name == "c3" and self.mask is not None else w

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of images (N, C, 32, 32); keeps what :meth:`backward` needs."""
        p, caches = self.params, []
        for stage, name in enumerate(CONVS):
            x, cache = L.conv2d_forward(x, self._weight(name), p[f"{name}.bias"])
            caches.append((f"conv:{name}", cache))
            x, cache = L.activation_forward(x, self.act)
            caches.append(("act", cache))
            if stage < 2:  # S2 after C1, S4 after C3
                x, cache = L.pool2d_forward(x, self.pool, 2, training=self.training, rng=self.rng)
                caches.append(("pool", cache))
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"LeNet-5 takes 32 to 35 pixels a side; C5 gave {x.shape[-2:]}")
        x, cache = L.flatten_forward(x)  # (N, 120)
        caches.append(("flatten", cache))
        x, cache = L.linear_forward(x, p["f6.weight"], p["f6.bias"])  # (N, 84)
        caches.append(("linear:f6", cache))
        x, cache = L.activation_forward(x, self.act)
        caches.append(("act", cache))
        x, cache = L.linear_forward(x, p["output.weight"], p["output.bias"])  # (N, classes)
        caches.append(("linear:output", cache))
        self._caches = caches
        return x

    def backward(self, dlogits: np.ndarray) -> Arrays:
        """Gradients of every parameter from ``∂L/∂logits``: the layers' backward passes in
        reverse order of the last :meth:`forward`."""
        grads: Arrays = {}
        d = dlogits
        for key, cache in reversed(self._caches):
            kind, _, name = key.partition(":")
            if kind in ("conv", "linear"):
                backward = L.conv2d_backward if kind == "conv" else L.linear_backward
                d, dw, db = backward(d, cache)
                assert db is not None  # every LeNet-5 layer has a bias
                if name == "c3" and self.mask is not None:
                    dw = dw * self.mask
                grads[f"{name}.weight"], grads[f"{name}.bias"] = dw, db
            elif kind == "act":
                d = L.activation_backward(d, cache)
            elif kind == "pool":
                d = L.pool2d_backward(d, cache)
            else:
                d = L.flatten_backward(d, cache)
        return grads

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, Arrays]:
        """Mean softmax cross-entropy of a batch and the gradient of every parameter."""
        loss, dlogits = L.softmax_cross_entropy(self.forward(x), labels)
        return loss, self.backward(dlogits)
