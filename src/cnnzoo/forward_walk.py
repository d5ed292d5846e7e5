"""One real image through a network, step by step (``cnnzoo explain forward``).

A digit from the built-in data, prepared as the model expects it (the weights' own
preprocessing when a file is given), goes through the model in eval mode; every leaf module's
call is one step, named as the analyzer names its rows (``cnnzoo summary``), with its output
shape and a few of its values. Reshapes between modules (LeNet-5's flatten before F6) are steps
of their own, and the logits end in the softmax with the top classes.

Above ``data`` and ``weights`` (it reads both), so it lives beside ``predict``, not in
``analysis``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnzoo.analysis.explain import Explanation
from cnnzoo.analysis.summary import summarize
from cnnzoo.checks import check_int
from cnnzoo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

VALUES_SHOWN = 5


@dataclass
class Step:
    """One step of the walk: a module call (``name`` as in the analyzer's rows) or a reshape
    between two calls (``type`` ``"flatten"``), its output shape and statistics."""

    name: str
    type: str
    block: str
    shape: tuple[int, ...]
    first: list[float]
    minimum: float
    maximum: float


@dataclass
class ForwardWalk:
    model: str
    weights: str | None
    image_index: int
    label: int
    preprocessing: str
    steps: list[Step] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)


def _step(name: str, kind: str, block: str, t: torch.Tensor) -> Step:
    flat = t.detach().flatten().float()
    return Step(
        name, kind, block, tuple(t.shape), flat[:VALUES_SHOWN].tolist(),
        float(flat.min()), float(flat.max()),
    )  # fmt: skip


def forward_walk(
    model: str = "lenet5",
    weights: str | os.PathLike[str] | None = None,
    index: int = 0,
    seed: int = 0,
) -> ForwardWalk:
    """Walk validation image ``index`` of the built-in digits through ``model``.

    Args:
        model: registry name (with ``weights``, the architecture the file is loaded into).
        weights: a weight file; without one the model has random weights drawn with ``seed``
            (the mechanism is the same, the answer is chance).
        index: which of the 360 validation digits.
        seed: the random weights' seed (the caller's random state is left as it was).

    Raises:
        UnknownModelError, WeightsError, InvalidArgumentError: a bad name, file or index.
    """
    name, net, pre, raw, label = _digit_and_model(model, weights, index, seed)
    image = pre.prepare(raw)
    x = image.unsqueeze(0)  # (1, C, H, W)
    rows = summarize(net, tuple(image.shape)).layers
    walk = ForwardWalk(
        name, None if weights is None else str(weights), index, label, pre.describe()
    )
    walk.steps.append(_step("input", "image", "", x))
    calls, logits = _leaf_calls(net, x)
    names = [r.name for r in rows]
    if [c[0] for c in calls] != names:  # the analyzer and this walk see the same calls
        raise AssertionError(f"calls {[c[0] for c in calls]} differ from the rows {names}")
    previous = x
    for row, (call, kind, given, out) in zip(rows, calls, strict=True):
        if given.shape != previous.shape and given.numel() == previous.numel():
            walk.steps.append(_step("(flatten)", "flatten", row.block, given))
        walk.steps.append(_step(call, kind, row.block, out))
        previous = out
    walk.probabilities = torch.softmax(logits[0].double(), 0).tolist()
    return walk


def _digit_and_model(
    model: str, weights: str | os.PathLike[str] | None, index: int, seed: int
) -> tuple[str, nn.Module, Preprocessing, torch.Tensor, int]:
    """The model (loaded, or random with ``seed``), its preprocessing, and validation digit
    ``index`` as read (1×8×8 in [0, 1]) with its label."""
    from cnnzoo.data.datasets import DIGITS_VAL, ArrayDataset, load_dataset
    from cnnzoo.data.preprocessing import channel_order
    from cnnzoo.models import build_model, get_spec

    check_int("--index", index, minimum=0)
    if index >= DIGITS_VAL:
        raise InvalidArgumentError(
            f"--index {index} is past the {DIGITS_VAL} validation digits: use 0 to "
            f"{DIGITS_VAL - 1}."
        )
    # At its native 8×8 the bundle keeps the images as read, in [0, 1]: one of them is prepared
    # by the caller, rather than the whole split at the model's size (a GB for 3×224×224).
    native = load_dataset("digits")
    assert isinstance(native.val, ArrayDataset)  # digits are held in memory
    raw, label = native.val.images[index], int(native.val.labels[index])  # (1, 8, 8)
    if weights is not None:
        from cnnzoo.weights import load_weights

        net, report = load_weights(model, weights)
        return report.model, net, net.pretrained_cfg, raw, label
    spec = get_spec(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(spec.name)
    c, h, w = spec.input_size
    # What load_dataset("digits", image_size=h, in_chans=c) prepares: the statistics of the
    # training split at its native size, gray repeated to c channels.
    assert native.preprocessing is not None  # load_dataset always sets it
    pre = replace(
        native.preprocessing, input_size=(c, h, w), channel_order=channel_order(c),
        mean=native.mean * c, std=native.std * c,
    )  # fmt: skip
    return spec.name, net, pre, raw, label


def _leaf_calls(
    net: nn.Module, x: torch.Tensor
) -> tuple[list[tuple[str, str, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Every leaf module's call in execution order (name, type, input, output) and the logits,
    from one forward pass in eval mode (the model's mode and hooks left as they were)."""
    calls: list[tuple[str, str, torch.Tensor, torch.Tensor]] = []
    leaves = {n: m for n, m in net.named_modules() if not list(m.children())}

    def hook(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            # Cloned: an in-place activation would otherwise change the input recorded before it.
            calls.append((name, type(module).__name__, args[0].clone(), output.clone()))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves.items()]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            logits = net(x)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return calls, logits


def render_forward(walk: ForwardWalk) -> Explanation:
    """The walk as lines: each step's name, shape and first values, then the softmax."""
    source = f"weights {walk.weights}" if walk.weights else "random weights (no --weights)"
    lines = [
        f"validation digit #{walk.image_index} of the built-in data (a {walk.label}), prepared "
        f"as the model expects: {walk.preprocessing}",
    ]
    width = max(len(s.name) for s in walk.steps)
    kinds = max(len(s.type) for s in walk.steps)
    for s in walk.steps:
        shape = "×".join(str(d) for d in s.shape)
        values = ", ".join(f"{v:.3f}" for v in s.first)
        more = ", …" if math.prod(s.shape) > len(s.first) else ""
        lines.append(
            f"{s.name:<{width}}  {s.type:<{kinds}}  {shape:<12} [{values}{more}]  "
            f"min {s.minimum:.3f}, max {s.maximum:.3f}"
        )
    probs = walk.probabilities
    top = sorted(range(len(probs)), key=lambda i: -probs[i])[:3]
    lines.append(
        "softmax of the logits: "
        + ", ".join(f"class {i}: {probs[i]:.3f}" for i in top)
        + f" → predicts {top[0]} (the image is a {walk.label})"
    )
    return Explanation(f"one image through {walk.model} ({source})", lines,
                       {"predicted": top[0], "label": walk.label})  # fmt: skip
