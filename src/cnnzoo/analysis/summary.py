"""The per-layer summary of a model at an input size: shapes, parameters, multiply-adds, memory
and receptive field, computed without any arithmetic (see :mod:`cnnzoo.analysis.trace`).

Conventions: ``macs`` counts one fused multiply-add of ``Conv2d`` and ``Linear`` layers (the
papers' and torchvision's convention); ``flops = 2 * macs``. Layers known to cost no
multiply-adds by that convention (BatchNorm, activations, pools, dropout, identity, flatten,
LRN) count zero; any other leaf type, and any convolution or matrix product called outside a
``Conv2d``/``Linear`` module, is listed in ``Summary.unknown`` instead of counted as zero.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

import torch
from torch import nn

from cnnzoo.analysis import formulas
from cnnzoo.analysis.trace import Trace, meta_build, trace
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import DropPath, StochasticPool2d
from cnnzoo.models import build_model, get_spec

# Leaf types that cost no multiply-adds by the conv + linear convention.
ZERO_MAC_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softmax,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    StochasticPool2d,
    nn.Dropout,
    DropPath,
    nn.Identity,
    nn.Flatten,
    nn.LocalResponseNorm,
)

# Copies of the trainable parameters each optimizer keeps (torch.optim's state).
OPTIMIZER_STATE_COPIES = {
    "sgd": 0,
    "momentum": 1,
    "nesterov": 1,
    "rmsprop": 1,
    "adagrad": 1,
    "adam": 2,
    "adamw": 2,
}


@dataclass(frozen=True)
class LayerRow:
    """One call of a leaf module.

    ``params_trainable``/``params_frozen``/``buffers`` are the module's own tensors' element
    counts, on its first call only (a module called twice is counted once). ``rf_size`` and
    ``rf_jump`` are the receptive field (H, W) of one output unit in input pixels and the
    distance between neighbouring units; ``None`` where the output has no traced input.
    ``ceil_mode`` is a pooling layer's rounding; ``bias`` whether a ``Conv2d``/``Linear`` has
    one (``None`` for other types).
    """

    name: str
    type: str
    block: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | str | None
    dilation: tuple[int, ...] | None
    groups: int | None
    params_trainable: int
    params_frozen: int
    buffers: int
    macs: int
    output_bytes: int
    inplace: bool
    rf_size: tuple[int, int] | None
    rf_jump: tuple[int, int] | None
    ceil_mode: bool = False
    bias: bool | None = None

    @property
    def params(self) -> int:
        """Trainable plus frozen parameters."""
        return self.params_trainable + self.params_frozen


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one training step needs, by part (see :meth:`Summary.training_memory`)."""

    weights: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations


@dataclass(frozen=True)
class Summary:
    """Rows and totals of one model at one input size and batch size.

    Totals count every parameter and buffer of the model once, called or not. ``macs`` is the
    sum over rows; ``flops`` is ``2 * macs``. ``activation_bytes`` is the forward pass's
    output tensors (in-place layers add nothing, the input is not counted);
    ``saved_activation_bytes`` is what autograd would keep for backward at ``batch_size``.
    """

    model: str
    input_size: tuple[int, ...]
    batch_size: int
    dtype: torch.dtype
    layers: list[LayerRow]
    params_trainable: int
    params_frozen: int
    buffers: int
    param_bytes: int
    buffer_bytes: int
    trainable_bytes: int
    activation_bytes: int
    saved_activation_bytes: int
    input_bytes: int
    unknown: dict[str, int] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return self.params_trainable + self.params_frozen

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.layers)

    @property
    def flops(self) -> int:
        """Floating-point operations, counted as 2 per multiply-add."""
        return 2 * self.macs

    def training_memory(
        self, optimizer: str = "sgd", batch_size: int | None = None
    ) -> TrainingMemory:
        """Estimate the memory of one training step.

        weights (parameters and buffers) + gradients (one per trainable parameter) + optimizer
        state (0, 1 or 2 copies of the trainable parameters: plain SGD, SGD with momentum or
        RMSprop/Adagrad, Adam/AdamW) + activations kept for backward, scaled linearly from the
        summarized batch to ``batch_size``.

        The activation part is an approximation: per leaf layer it keeps the input
        (convolution, linear, BatchNorm, SiLU, ...) or the output (ReLU, sigmoid, tanh), or
        nothing (identity, flatten, average pools, dropout's own output); max-pool adds int64
        indices and dropout a one-byte mask; an elementwise product keeps both operands. A
        tensor kept by several layers counts once. It leaves out allocator rounding, the
        workspace of convolution algorithms, temporary buffers inside a layer and the
        framework itself, so a process's peak memory is higher.

        Raises:
            InvalidArgumentError: an optimizer name it does not know.
        """
        key = optimizer.lower()
        if key not in OPTIMIZER_STATE_COPIES:
            raise InvalidArgumentError(
                f"unknown optimizer {optimizer!r}: choose one of "
                f"{', '.join(OPTIMIZER_STATE_COPIES)}."
            )
        batch = self.batch_size if batch_size is None else batch_size
        saved = self.saved_activation_bytes * batch // self.batch_size
        return TrainingMemory(
            weights=self.param_bytes + self.buffer_bytes,
            gradients=self.trainable_bytes,
            optimizer_state=OPTIMIZER_STATE_COPIES[key] * self.trainable_bytes,
            activations=saved,
        )


def leaf_macs(module: nn.Module, output_shape: tuple[int, ...]) -> int | None:
    """Multiply-adds of one call of a ``Conv2d`` or ``Linear`` with that output shape.

    ``None`` for every other module type: the caller decides whether that type is known to
    cost no multiply-adds by the conv + linear convention, or has no formula.
    """
    if isinstance(module, nn.Conv2d):
        rows, _, h, w = output_shape
        return rows * formulas.conv_macs(
            module.in_channels, module.out_channels, module.kernel_size, h, w, module.groups
        )
    if isinstance(module, nn.Linear):
        rows = math.prod(output_shape[:-1])
        return formulas.linear_macs(module.in_features, module.out_features, rows)
    return None


def _block_of(model: nn.Module) -> dict[str, str]:
    stage_map = getattr(model, "stage_map", None) or {}
    return {path: label for label, paths in stage_map.items() for path in paths}


def _block(name: str, blocks: dict[str, str]) -> str:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        label = blocks.get(".".join(parts[:i]))
        if label is not None:
            return label
    return parts[0]


class _Geometry(TypedDict):
    """The per-layer settings a row carries (``LayerRow``'s fields of the same names); None
    where a layer type has no such setting."""

    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | str | None
    dilation: tuple[int, ...] | None
    groups: int | None
    ceil_mode: bool
    bias: bool | None


def _geometry(module: nn.Module) -> _Geometry:
    def tup(value: object) -> tuple[int, ...] | None:
        if isinstance(value, (tuple, list)):
            return tuple(value)
        return (value, value) if isinstance(value, int) else None

    if isinstance(module, nn.Conv2d):
        padding = module.padding if isinstance(module.padding, str) else tup(module.padding)
        return {
            "kernel": tup(module.kernel_size),
            "stride": tup(module.stride),
            "padding": padding,
            "dilation": tup(module.dilation),
            "groups": module.groups,
            "ceil_mode": False,
            "bias": module.bias is not None,
        }
    if hasattr(module, "kernel_size") and not isinstance(module, nn.LocalResponseNorm):
        stride = getattr(module, "stride", None) or module.kernel_size
        return {
            "kernel": tup(module.kernel_size),
            "stride": tup(stride),
            "padding": tup(getattr(module, "padding", 0)),
            "dilation": tup(getattr(module, "dilation", None)),
            "groups": None,
            "ceil_mode": bool(getattr(module, "ceil_mode", False)),
            "bias": None,
        }
    bias = module.bias is not None if isinstance(module, nn.Linear) else None
    return _Geometry(
        kernel=None, stride=None, padding=None, dilation=None, groups=None, ceil_mode=False,
        bias=bias,
    )  # fmt: skip


def _rows(model: nn.Module, result: Trace) -> tuple[list[LayerRow], Counter[str]]:
    blocks = _block_of(model)
    seen: set[nn.Module] = set()
    unknown: Counter[str] = Counter()
    rows = []
    for call in result.calls:
        module = call.module
        for name in call.functional:
            unknown[f"{name} (functional)"] += 1
        if call.name == "(functional)":
            continue
        macs = leaf_macs(module, call.output_shape) if call.output_shape else None
        if macs is None:
            if not isinstance(module, ZERO_MAC_TYPES):
                unknown[type(module).__name__] += 1
            macs = 0
        first = module not in seen
        seen.add(module)
        own = list(module.parameters(recurse=False)) if first else []
        rf = call.receptive
        rows.append(
            LayerRow(
                name=call.name,
                type=type(module).__name__,
                block=_block(call.name, blocks),
                input_shape=call.input_shape,
                output_shape=call.output_shape,
                **_geometry(module),
                params_trainable=sum(p.numel() for p in own if p.requires_grad),
                params_frozen=sum(p.numel() for p in own if not p.requires_grad),
                buffers=sum(b.numel() for b in module.buffers(recurse=False)) if first else 0,
                macs=macs,
                output_bytes=call.output_bytes,
                inplace=call.inplace,
                rf_size=rf.size if rf else None,
                rf_jump=rf.jump if rf else None,
            )
        )
    return rows, unknown


def summarize(
    model_or_name: nn.Module | str,
    input_size: tuple[int, ...] | None = None,
    batch_size: int = 1,
    num_classes: int | None = None,
    dtype: torch.dtype | None = None,
) -> Summary:
    """Summarize a registered model (by name) or any ``nn.Module`` at an input size.

    A name is built on the meta device (no weights are allocated). A module with real weights
    is traced through meta stand-ins for its tensors and left exactly as it was.

    Args:
        model_or_name: a registry name such as ``"resnet50"``, or a module.
        input_size: ``(C, H, W)``; a registered model's default input when ``None``.
        batch_size: images per batch (every shape, MAC and byte count scales with it).
        num_classes: classifier outputs when building by name; the model's default if ``None``.
        dtype: input dtype; the model's parameter dtype when ``None``.

    Raises:
        InputSizeError: the input is too small for a layer, or gives a classifier the wrong
            number of features; the message names the layer and the valid sizes.
        UnknownModelError: the name is not registered.
        InvalidArgumentError: ``input_size`` is not three positive integers.
    """
    from cnnzoo.analysis.input_size import as_input_size, explain_size_error

    size: tuple[int, ...]
    model: nn.Module
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        name = spec.name
        size = spec.input_size if input_size is None else as_input_size(input_size)
        with meta_build():
            model = build_model(name, num_classes=num_classes, in_chans=size[0])
    else:
        model, name = model_or_name, type(model_or_name).__name__
        if input_size is None:
            raise InvalidArgumentError(f"summarize({name}) needs an input_size (C, H, W).")
        size = as_input_size(input_size)
    try:
        result = trace(model, size, batch_size, dtype)
    except Exception as error:  # an InputSizeError gets the valid range added, once
        raise explain_size_error(model_or_name, model, size, error) from None
    rows, unknown = _rows(model, result)
    params = list(model.parameters())
    buffers = list(model.buffers())
    trainable = [p for p in params if p.requires_grad]
    return Summary(
        model=name,
        input_size=size,
        batch_size=batch_size,
        dtype=dtype or (params[0].dtype if params else torch.get_default_dtype()),
        layers=rows,
        params_trainable=sum(p.numel() for p in trainable),
        params_frozen=sum(p.numel() for p in params if not p.requires_grad),
        buffers=sum(b.numel() for b in buffers),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in buffers),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        activation_bytes=sum(r.output_bytes for r in rows if not r.inplace),
        saved_activation_bytes=result.saved_bytes,
        input_bytes=result.input_bytes,
        unknown=dict(unknown),
    )
