"""One shape-only pass through a model, recording what the analyzer needs.

The pass runs on the meta device: tensors carry shapes and dtypes but no data, so nothing is
computed and no activation memory is used. Two things watch it:

- forward hooks on every leaf module of the model record each call (name, input and output
  shapes);
- a ``TorchFunctionMode`` sees every torch function, including the functional ones between
  modules (``x + y``, ``torch.cat``, ``torch.flatten``, slicing). For each tensor it keeps the
  receptive field and a :class:`SizeGraph` node saying how the tensor's spatial size follows
  from the input's, so branches, residual additions and concatenations are followed exactly.

Before each windowed operation (convolution, pooling) and each ``linear`` the mode checks the
input size with the formulas and raises :class:`~cnnzoo.errors.InputSizeError` naming the
layer, so a bad input fails before any arithmetic. A model with real weights is never copied or
changed: its parameters and buffers are stood in for by meta tensors for the one call
(``torch.func.functional_call``), our hooks are removed and its train/eval flags restored.
Hooks the user registered on the model do run during the pass, on meta tensors.

Nothing outside the model and the calling thread is touched: no global module hooks, no
replaced ``torch.nn.init`` functions (:func:`meta_build` skips initialisers through a
``TorchFunctionMode``, which is per thread), so another thread running a model meanwhile is
not affected, and an error anywhere leaves everything as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnzoo.analysis import formulas
from cnnzoo.errors import InputSizeError

Pair = tuple[int, int]


# Element-wise and normalisation functions keep their input's shape. On the meta device some of
# them dispatch through slow Python decompositions (batch_norm ≈ 0.9 ms, relu ≈ 0.4 ms a call,
# against 1.5 µs for an empty meta tensor), which dominated the trace of BN-heavy networks such
# as DenseNet; the trace only needs the shape, so it makes the output itself.
_SAME_SHAPE = frozenset(
    {
        "batch_norm", "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "silu", "hardswish",
        "hardsigmoid", "sigmoid", "sigmoid_", "tanh", "tanh_", "dropout", "gelu", "elu",
        "leaky_relu", "mish",
    }
)  # fmt: skip


# Elementwise sums and products (residual adds, squeeze-excitation's scale), answered on the
# meta device from the broadcast shape: torch's meta kernel for them imports torch._dynamo.
_BINARY = frozenset(
    {"add", "__add__", "__radd__", "add_", "__iadd__", "mul", "__mul__", "__rmul__", "mul_",
     "__imul__"}
)  # fmt: skip


def _meta_binary(name: str, x: torch.Tensor, other: object) -> torch.Tensor:
    if name in ("add_", "mul_", "__iadd__", "__imul__"):
        return x  # in place
    shape = list(x.shape)
    if isinstance(other, torch.Tensor):  # numpy's broadcasting rule, dimensions from the right
        theirs = list(other.shape)
        shape = [1] * (len(theirs) - len(shape)) + shape
        theirs = [1] * (len(shape) - len(theirs)) + theirs
        if any(a != b and 1 not in (a, b) for a, b in zip(shape, theirs, strict=True)):
            raise RuntimeError(f"shapes {tuple(x.shape)} and {tuple(other.shape)} do not broadcast")
        shape = [max(a, b) if 1 in (a, b) else a for a, b in zip(shape, theirs, strict=True)]
    numeric = isinstance(other, (torch.Tensor, bool, int, float))
    dtype = torch.result_type(x, other) if numeric else x.dtype  # type: ignore[call-overload]
    return torch.empty(shape, dtype=dtype, device="meta")


def _all_meta(tensors: object) -> bool:
    return isinstance(tensors, (list, tuple)) and all(
        isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tensors
    )


def _meta_cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` on the meta device (inception's branches, dense blocks), without torch's
    meta kernel (which imports torch._dynamo)."""
    first = tensors[0]
    dim = dim % first.dim()
    for t in tensors:
        if t.dim() != first.dim() or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)) if i != dim
        ):
            raise RuntimeError(
                f"torch.cat: shapes {tuple(first.shape)} and {tuple(t.shape)} differ"
            )
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _same_shape(name: str, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    inplace = name.endswith("_") or bool(kwargs.get("inplace", False))
    if (
        not inplace
        and name
        in (
            "relu",
            "relu6",
            "silu",
            "hardswish",
            "hardsigmoid",
            "elu",
            "leaky_relu",
            "mish",
            "hardtanh",
        )
        and len(args) > 1
    ):
        inplace = bool(args[-1]) if isinstance(args[-1], bool) else False  # fmt: skip
    if not inplace and name == "dropout" and len(args) > 3:
        inplace = bool(args[3])
    return x if inplace else torch.empty(x.shape, dtype=x.dtype, device="meta")


def _meta_window(name, x, args, kwargs, kernel, stride, padding, dilation, ceil_mode):
    """A convolution's or pooling's output on the meta device, shaped by the textbook formula.

    Torch's own meta kernels for these (and its ``addmm`` for ``linear``, its ``add`` for a
    residual sum) import sympy and torch._dynamo on first use: over 4 s of a ``cnnzoo
    summary``'s start-up, for a shape the formula gives at once. ``None`` (run the function
    itself) off the meta device, on unbatched input, with padding given as "same" (asymmetric
    for even extents) or where pooling also returns indices."""
    if x.device.type != "meta" or x.dim() != 4:
        return None
    if name == "conv2d":
        raw_padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
        if isinstance(raw_padding, str):
            return None
        channels = (args[1] if len(args) > 1 else kwargs["weight"]).shape[0]
    elif name == "max_pool2d" and (kwargs.get("return_indices") or (len(args) > 6 and args[6])):
        return None
    else:
        channels = x.shape[1]
    h, w = (
        formulas.conv_output_size(
            x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode
        )
        for a in (0, 1)
    )
    return torch.empty((x.shape[0], channels, h, w), dtype=x.dtype, device="meta")


@dataclass
class SizeNode:
    """How one tensor's spatial size (H, W) follows from the input's.

    ``kind`` is ``"input"``; ``"window"`` (a convolution, pooling or strided slice of
    ``parent`` with these kernel/stride/padding/dilation/ceil_mode per axis); ``"fixed"`` (an
    adaptive pool's output, or a size the analyzer cannot follow, ``opaque`` then);
    ``"flat"`` (``parent`` flattened to ``channels·H·W`` features); ``"vector"`` (a linear
    layer's ``channels`` outputs, whatever the input size).
    """

    kind: str
    layer: str
    parent: int = -1
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False
    fixed: Pair = (1, 1)
    channels: int = 1
    opaque: bool = False


@dataclass
class SizeCheck:
    """A condition on sizes: ``kind`` "equal" (two branches meet) or "features" (a ``linear``
    reads ``features`` values from node ``a``: its flat size, or its width if not flat)."""

    kind: str
    layer: str
    a: int
    b: int = -1
    features: int = 0


@dataclass
class SizeGraph:
    """Nodes and checks in the order the forward pass met them."""

    steps: list[SizeNode | SizeCheck] = field(default_factory=list)

    def add(self, step: SizeNode | SizeCheck) -> int:
        self.steps.append(step)
        return len(self.steps) - 1

    @property
    def exact(self) -> bool:
        """Whether every size change was one the analyzer can follow."""
        return not any(isinstance(s, SizeNode) and s.opaque for s in self.steps)


@dataclass(frozen=True)
class Receptive:
    """Receptive field of one tensor's units: side ``size`` and ``jump`` in input pixels."""

    size: Pair
    jump: Pair


@dataclass
class Call:
    """One call of a leaf module, as seen by the hooks."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None = None
    output_bytes: int = 0
    inplace: bool = False
    receptive: Receptive | None = None
    functional: list[str] = field(default_factory=list)
    input: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class Trace:
    """Everything one pass recorded."""

    calls: list[Call]
    graph: SizeGraph
    input_bytes: int
    saved_bytes: int


def _pair(value: Any) -> Pair:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)


# Argument order of the windowed functions, to read them however they were passed.
def _conv_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    kernel = tuple(weight.shape[-2:])
    if padding == "valid":
        padding = 0
    elif padding == "same":  # half the dilated extent on each side (odd extents exactly)
        padding = tuple(d * (k - 1) // 2 for d, k in zip(_pair(dilation), kernel, strict=True))
    return kernel, stride, padding, dilation, False


def _max_pool_args(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):  # fmt: skip
    return kernel_size, stride or kernel_size, padding, dilation, ceil_mode


def _avg_pool_args(input, kernel_size, stride=None, padding=0, ceil_mode=False, *_):
    return kernel_size, stride or kernel_size, padding, 1, ceil_mode


_WINDOWS = {"conv2d": _conv_args, "max_pool2d": _max_pool_args, "avg_pool2d": _avg_pool_args}
_ADAPTIVE = ("adaptive_avg_pool2d", "adaptive_max_pool2d")
# Functions whose multiply-adds only a Conv2d/Linear module's formula counts; met anywhere
# else (a functional call in a custom forward) they are reported as unknown, not as zero.
_MAC_FUNCTIONS = ("conv2d", "linear", "matmul", "mm", "bmm", "addmm", "einsum", "conv1d", "conv3d")
# Elementwise products keep both operands for backward (squeeze-excitation's x·scale).
_SAVES_OPERANDS = ("mul", "__mul__", "__rmul__", "mul_")


class _Tracer(TorchFunctionMode):
    def __init__(self, graph: SizeGraph) -> None:
        super().__init__()
        self.graph = graph
        self.orphans: list[str] = []  # MAC functions called outside any leaf module
        self.extra_saved = 0  # bytes kept for backward that are no traced tensor
        self.node: dict[int, int] = {}  # id(tensor) -> index of its SizeNode
        self.rf: dict[int, Receptive] = {}
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive so ids stay unique
        self.stack: list[Call] = []
        self.saved: dict[int, int] = {}  # id(tensor) -> bytes, tensors kept for backward

    # -- bookkeeping ---------------------------------------------------------------------
    def layer(self) -> str:
        return self.stack[-1].name if self.stack else "(functional)"

    def mark(self, t: torch.Tensor, node: int, rf: Receptive) -> None:
        self.node[id(t)] = node
        self.rf[id(t)] = rf
        self.keep.append(t)

    def save(self, t: torch.Tensor) -> None:
        if id(t) in self.node:
            base = t._base if t._base is not None else t
            self.saved[id(base)] = base.numel() * base.element_size()

    def start(self, x: torch.Tensor) -> None:
        self.mark(x, self.graph.add(SizeNode("input", "input")), Receptive((1, 1), (1, 1)))

    # -- the mode ------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _MAC_FUNCTIONS and self.stack:
            call = self.stack[-1]
            if not isinstance(call.module, (nn.Conv2d, nn.Linear)):
                call.functional.append(name)
        elif name in _MAC_FUNCTIONS:
            self.orphans.append(name)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is not None and id(x) in self.node:
            if name in _WINDOWS:
                return self.window(func, args, kwargs, *_WINDOWS[name](*args, **kwargs))
            if name in _ADAPTIVE:
                return self.adaptive(func, args, kwargs)
            if name == "linear":
                self.check_features(x, args[1] if len(args) > 1 else kwargs["weight"])
            if name == "__getitem__" and x.dim() == 4:
                sliced = self.strided_slice(func, args)
                if sliced is not None:
                    return sliced
        if name in _SAME_SHAPE and x is not None and x.device.type == "meta":
            out = _same_shape(name, x, args, kwargs)
        elif name in _BINARY and x is not None and x.device.type == "meta":
            out = _meta_binary(name, x, args[1] if len(args) > 1 else kwargs["other"])
        elif name == "cat" and args and _all_meta(args[0]):
            out = _meta_cat(args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0))
        elif name == "linear" and x is not None and x.device.type == "meta":
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            out = torch.empty((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device="meta")
        else:
            out = func(*args, **kwargs)
        if name == "__get__":
            # Attribute reads (``t._base`` in our own bookkeeping, ``t.grad``) compute nothing.
            return out
        if name == "linear":
            features = SizeNode("vector", self.layer(), channels=int(out.shape[-1]))
            self.mark(out, self.graph.add(features), self.rf[id(x)])
            return out
        if name in _SAVES_OPERANDS:
            for t in _tensors(args):
                self.save(t)
        self.follow(args, kwargs, out)
        return out

    def window(self, func, args, kwargs, kernel, stride, padding, dilation, ceil_mode):
        x = args[0]
        k, s, p, d = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
        parent = self.node[id(x)]
        for axis in (0, 1):
            n = x.shape[2 + axis]
            if formulas.conv_output_size(n, k[axis], s[axis], p[axis], d[axis], ceil_mode) < 1:
                text = formulas.output_size_formula(n, k[axis], s[axis], p[axis], d[axis],
                                                    ceil_mode)  # fmt: skip
                raise InputSizeTooSmall(self.layer(), tuple(x.shape[2:]), text)
        out = _meta_window(func.__name__, x, args, kwargs, k, s, p, d, ceil_mode)
        if out is None:
            out = func(*args, **kwargs)
        node = self.graph.add(SizeNode("window", self.layer(), parent, k, s, p, d, ceil_mode))
        rf = self.rf[id(x)]
        steps = [formulas.receptive_field(rf.size[a], rf.jump[a], k[a], s[a], d[a]) for a in (0, 1)]
        first = out[0] if isinstance(out, tuple) else out
        self.mark(first, node, Receptive((steps[0][0], steps[1][0]), (steps[0][1], steps[1][1])))
        return out

    def adaptive(self, func, args, kwargs):
        x = args[0]
        if func.__name__ == "adaptive_avg_pool2d" and x.device.type == "meta" and x.dim() == 4:
            # The output size as given (None: the input's), not torch's meta kernel (sympy).
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            size = (size, size) if isinstance(size, int) else tuple(size)
            side = [x.shape[2 + a] if size[a] is None else size[a] for a in (0, 1)]
            out = torch.empty((*x.shape[:2], *side), dtype=x.dtype, device="meta")
        else:
            out = func(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        fixed = (int(first.shape[-2]), int(first.shape[-1]))
        node = self.graph.add(SizeNode("fixed", self.layer(), fixed=fixed))
        rf = self.rf[id(x)]
        size, jump = [], []
        for a in (0, 1):
            k, s = formulas.adaptive_pool_window(x.shape[2 + a], fixed[a])
            r, j = formulas.receptive_field(rf.size[a], rf.jump[a], k, s)
            size.append(r)
            jump.append(j)
        self.mark(first, node, Receptive((size[0], size[1]), (jump[0], jump[1])))
        return out

    def strided_slice(self, func, args):
        index = args[1]
        if not isinstance(index, tuple) or len(index) != 4:
            return None
        if not all(isinstance(i, slice) for i in index):
            return None
        spatial = index[2:]
        if any(i.start not in (None, 0) or i.stop is not None for i in spatial):
            return None
        x = args[0]
        step = (spatial[0].step or 1, spatial[1].step or 1)
        out = func(*args)
        node = self.graph.add(SizeNode("window", self.layer(), self.node[id(x)], stride=step))
        rf = self.rf[id(x)]
        self.mark(out, node, Receptive(rf.size, (rf.jump[0] * step[0], rf.jump[1] * step[1])))
        return out

    def check_features(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        want = weight.shape[-1]
        self.graph.add(SizeCheck("features", self.layer(), self.node[id(x)], features=want))
        if x.shape[-1] != want:
            raise InputSizeWrongFeatures(self.layer(), int(x.shape[-1]), int(want))

    def follow(self, args: tuple, kwargs: dict, out: Any) -> None:
        """Give each output tensor a size node and receptive field from the traced inputs."""
        ins = [t for t in _tensors((args, list(kwargs.values()))) if id(t) in self.node]
        if not ins:
            return
        for o in _tensors(out):
            if o.dim() >= 3:
                same = [t for t in ins if t.dim() == o.dim() and t.shape[-2:] == o.shape[-2:]]
                if same:
                    node = self.node[id(same[0])]
                    for t in same[1:]:
                        if self.node[id(t)] != node:
                            self.graph.add(SizeCheck("equal", self.layer(), node, self.node[id(t)]))
                else:
                    node = self.graph.add(
                        SizeNode("fixed", self.layer(), fixed=_pair(o.shape[-2:]), opaque=True)
                    )
                self.mark(o, node, self.merge(same or ins, ins))
            else:
                self.mark(o, self.flat(ins), self.globalize(ins, self.merge(ins, ins)))

    def merge(self, grid: list[torch.Tensor], ins: list[torch.Tensor]) -> Receptive:
        """Where branches meet, a unit sees the union of what they see (the largest field);
        its jump is that of the inputs on its own grid, not of broadcast ones (an SE scale)."""
        size = [max(self.rf[id(t)].size[a] for t in ins) for a in (0, 1)]
        jump = [max(self.rf[id(t)].jump[a] for t in grid) for a in (0, 1)]
        return Receptive((size[0], size[1]), (jump[0], jump[1]))

    def flat(self, ins: list[torch.Tensor]) -> int:
        spatial = [t for t in ins if t.dim() == 4]
        if not spatial:
            return self.node[id(ins[0])]
        x = spatial[0]
        return self.graph.add(
            SizeNode("flat", self.layer(), self.node[id(x)], channels=int(x.shape[1]))
        )

    def globalize(self, ins: list[torch.Tensor], rf: Receptive) -> Receptive:
        # Flattening a map hands every unit of the next layer the whole map.
        spatial = [t for t in ins if t.dim() == 4]
        if not spatial:
            return rf
        h, w = spatial[0].shape[2:]
        return Receptive(
            (rf.size[0] + (h - 1) * rf.jump[0], rf.size[1] + (w - 1) * rf.jump[1]),
            (rf.jump[0] * h, rf.jump[1] * w),
        )


class InputSizeTooSmall(InputSizeError):
    """A windowed layer whose output would be empty; carries the layer and the formula."""

    def __init__(self, layer: str, size: tuple[int, ...], formula: str) -> None:
        self.layer, self.size, self.formula = layer, size, formula
        side = "×".join(str(s) for s in size)
        super().__init__(f"{layer} gets a {side} input and its output size {formula} < 1.")


class InputSizeWrongFeatures(InputSizeError):
    """A ``linear`` that reads a different number of features than the input gives it."""

    def __init__(self, layer: str, got: int, want: int) -> None:
        self.layer, self.got, self.want = layer, got, want
        super().__init__(f"{layer} reads {want} features but gets {got}.")


# Leaf types that keep their output (not their input) for backward. The others keep their
# input, and when run in place autograd keeps a copy of it (ReLU6, SiLU, Hardswish do that).
_SAVES_OUTPUT = (nn.ReLU, nn.Sigmoid, nn.Tanh)
# Leaf types that keep nothing of size for backward (the shape or a scale only).
_SAVES_NOTHING = (nn.Identity, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Dropout)


def trace(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
) -> Trace:
    """Run ``model`` once on a meta tensor of ``(batch_size, *input_size)`` in eval mode.

    Raises:
        InputSizeError: a layer cannot take the size its input has (subclasses name the layer).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    on_meta = all(t.device.type == "meta" for t in (*params.values(), *buffers.values()))
    if dtype is None:
        floats = [p.dtype for p in params.values() if p.is_floating_point()]
        dtype = floats[0] if floats else torch.get_default_dtype()
    names = {m: n for n, m in model.named_modules()}
    graph = SizeGraph()
    tracer = _Tracer(graph)
    calls: list[Call] = []

    def pre_hook(module: nn.Module, inputs: tuple) -> None:
        if module not in leaf_set:
            return
        first = next(_tensors(inputs), None)
        call = Call(names[module], module, None if first is None else tuple(first.shape))
        call.input = first
        tracer.stack.append(call)

    def post_hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if module not in leaf_set:
            return
        call = tracer.stack.pop()
        out = next(_tensors(output), None)
        calls.append(call)
        if out is None:
            return
        call.output_shape = tuple(out.shape)
        call.output_bytes = out.numel() * out.element_size()
        call.inplace = out is call.input
        if id(out) not in tracer.rf:
            # A leaf whose forward used no torch function on the traced input (rare).
            return
        _pool_like(tracer, module, call, out)
        call.receptive = tracer.rf[id(out)]
        _count_saved(tracer, module, call, out)

    leaf_set = {m for m in names if next(m.children(), None) is None}
    modes = {m: m.training for m in names}
    x = torch.empty((batch_size, *input_size), device="meta", dtype=dtype)
    # Hooks on this model's leaves only, not global ones that every module of every thread
    # would call: ≈ 30 µs a hook, 40 ms for DenseNet-201's 606 leaves, within the noise of its
    # summary. Put ahead of the user's own hooks, where global hooks run.
    handles = []
    try:
        for leaf in leaf_set:
            handles.append(leaf.register_forward_pre_hook(pre_hook, prepend=True))
            handles.append(leaf.register_forward_hook(post_hook, prepend=True))
        model.eval()
        with torch.no_grad(), tracer:
            tracer.start(x)
            _call_on_meta(model, x, None if on_meta else (params, buffers))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    for call in calls:
        call.input = None
    if tracer.orphans:
        calls.append(Call("(functional)", nn.Module(), None, functional=tracer.orphans))
    return Trace(
        calls, graph, x.numel() * x.element_size(), sum(tracer.saved.values()) + tracer.extra_saved
    )


def _count_saved(tracer: _Tracer, module: nn.Module, call: Call, out: torch.Tensor) -> None:
    """What backward keeps of one leaf call, by layer type: the output for the activations that
    can recompute their gradient from it, nothing for shape-only layers, else the input."""
    if isinstance(module, _SAVES_OUTPUT):
        tracer.save(out)
    elif not isinstance(module, _SAVES_NOTHING) and call.input is not None:
        tracer.save(call.input)
        if call.inplace:
            tracer.extra_saved += call.output_bytes
    if isinstance(module, nn.MaxPool2d):  # the arg-max indices, int64
        tracer.extra_saved += out.numel() * 8
    if isinstance(module, nn.Dropout):  # the kept/dropped mask, one byte a value
        tracer.extra_saved += out.numel()


def _call_on_meta(
    model: nn.Module,
    x: torch.Tensor,
    real: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None,
) -> None:
    """``model(x)`` for a model on the meta device; for one with ``real`` parameters and
    buffers, one call with meta stand-ins for them, so that the real tensors stay put."""
    if real is None:
        model(x)
        return
    params, buffers = real
    stand_ins = {k: torch.empty_like(v, device="meta") for k, v in params.items()}
    stand_ins |= {k: torch.empty_like(v, device="meta") for k, v in buffers.items()}
    torch.func.functional_call(model, stand_ins, (x,), strict=True)


def _pool_like(tracer: _Tracer, module: nn.Module, call: Call, out: torch.Tensor) -> None:
    """A pooling module computed with unfold/reshape (stochastic pooling) gets the size node and
    receptive field of its window, read from its ``kernel_size``/``stride``/``padding``."""
    node = tracer.graph.steps[tracer.node[id(out)]]
    if not (isinstance(node, SizeNode) and node.opaque and hasattr(module, "kernel_size")):
        return
    x = call.input
    if x is None or id(x) not in tracer.node:
        return
    k, s = _pair(module.kernel_size), _pair(getattr(module, "stride", None) or module.kernel_size)
    p = _pair(getattr(module, "padding", 0))
    node.kind, node.opaque, node.parent = "window", False, tracer.node[id(x)]
    node.kernel, node.stride, node.padding = k, s, p
    rf = tracer.rf[id(x)]
    steps = [formulas.receptive_field(rf.size[a], rf.jump[a], k[a], s[a]) for a in (0, 1)]
    tracer.rf[id(out)] = Receptive((steps[0][0], steps[1][0]), (steps[0][1], steps[1][1]))


def evaluate(graph: SizeGraph, height: int, width: int) -> tuple[str, str] | None:
    """Walk the size graph at an input of ``height × width``; the first broken step, if any.

    Returns ``None`` when every layer can run, else ``(layer, what broke)`` where the second
    item writes the formula or constraint out with the numbers substituted.
    """
    sizes: list[Pair | int | None] = []
    flat_text: dict[int, str] = {}
    for step in graph.steps:
        if isinstance(step, SizeCheck):
            broken = _check(step, sizes, flat_text)
            sizes.append(None)
            if broken is not None:
                return step.layer, broken
            continue
        if step.kind == "input":
            sizes.append((height, width))
        elif step.kind == "fixed":
            sizes.append(step.fixed)
        elif step.kind == "vector":
            sizes.append(step.channels)
        elif step.kind == "flat":
            h, w = _spatial(sizes, step.parent)
            sizes.append(step.channels * h * w)
            flat_text[len(sizes) - 1] = f"{step.channels}·{h}·{w} = {step.channels * h * w}"
        else:
            h, w = _spatial(sizes, step.parent)
            out = []
            for a, n in enumerate((h, w)):
                args = (n, step.kernel[a], step.stride[a], step.padding[a], step.dilation[a],
                        step.ceil_mode)  # fmt: skip
                o = formulas.conv_output_size(*args)
                if o < 1:
                    return step.layer, (
                        f"gets a {h}×{w} input and its output size "
                        f"{formulas.output_size_formula(*args)} < 1"
                    )
                out.append(o)
            sizes.append((out[0], out[1]))
    return None


def _spatial(sizes: list[Pair | int | None], index: int) -> Pair:
    size = sizes[index]
    # Flattening and windows read a feature map: their parent's size is a pair, never a
    # vector's width (int) or a check's None.
    assert isinstance(size, tuple)
    return size


def _check(step: SizeCheck, sizes: list, flat_text: dict[int, str]) -> str | None:
    a = sizes[step.a]
    if step.kind == "equal":
        b = sizes[step.b]
        if a != b:
            return f"joins branches of sizes {a[0]}×{a[1]} and {b[0]}×{b[1]}, which must be equal"
        return None
    got = a if isinstance(a, int) else a[1]
    if got != step.features:
        return f"reads {step.features} features but gets {flat_text.get(step.a, got)}"
    return None


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
)  # fmt: skip


# The random fills the initialisers end in (a model may also call them directly on `.data`).
_RANDOM_FILLS = (torch.Tensor.normal_, torch.Tensor.uniform_)


class _SkipMetaInit(TorchFunctionMode):
    """Initialisers return their meta tensor untouched (``torch.nn.init`` functions hand
    themselves to an active mode; the random fills are seen as tensor methods). Only meta
    tensors are skipped: a real tensor built inside is initialised as usual."""

    skipped = frozenset({*(getattr(nn.init, n) for n in _INIT_FUNCTIONS), *_RANDOM_FILLS})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.skipped:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def meta_build() -> Iterator[None]:
    """Build models on the meta device without running their weight initialisers.

    Meta tensors hold no values, so initialising them is pointless, yet ``normal_`` on the meta
    device goes through a Python decomposition (≈ 1 ms a call): it was over half the time of
    summarizing DenseNet-201. Both the device and the skipping are torch function modes, which
    are per thread and end with the block: ``torch.nn.init`` itself is never replaced.
    """
    with torch.device("meta"), _SkipMetaInit():
        yield
