"""Valid input sizes, derived from the layers rather than declared.

One shape-only pass at a size the model takes records how every tensor's spatial size follows
from the input's (:class:`~cnnzoo.analysis.trace.SizeGraph`). Walking that graph with the
textbook formulas answers, for any other input size and without running the model, whether
every windowed layer still gets an output of at least 1×1, whether branches that meet still
have equal sizes, and whether each classifier still reads the number of features it was built
for. The first broken step names the layer and the formula with its numbers substituted.
"""

from __future__ import annotations

import functools

from torch import nn

from cnnzoo.analysis.trace import SizeCheck, SizeGraph, SizeNode, evaluate, meta_build, trace
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.models import ModelSpec, build_model, get_spec

# Square sides tried, in order, to find one a user's module takes when no size is given.
_PROBE_SIDES = (224, 32, 64, 128, 256, 299, 512, 1024)
# No classic CNN needs more; it bounds the search for a largest size.
_MAX_SIDE = 8192


def as_input_size(value: object, channels: int = 3) -> tuple[int, int, int]:
    """``value`` as ``(C, H, W)`` if it is three positive integers; otherwise a one-line
    :class:`InvalidArgumentError` (``(H, W)`` alone gets ``(channels, H, W)`` suggested)."""
    size = tuple(value) if isinstance(value, (tuple, list)) else None
    if (
        size is not None
        and len(size) == 3
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return size
    fix = "e.g. (3, 224, 224)"
    if size is not None and len(size) == 2:
        fix = f"give the channels too, e.g. ({channels}, {size[0]}, {size[1]})"
    raise InvalidArgumentError(
        f"input_size must be (C, H, W), three positive integers, got {value!r}: {fix}."
    )


def _model_and_size(
    model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None
) -> tuple[nn.Module, str, tuple[int, ...] | None]:
    size: tuple[int, int, int] | None
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        size = spec.input_size if input_size is None else as_input_size(input_size)
        return _meta_model(spec.name, size[0]), spec.name, size
    size = None if input_size is None else as_input_size(input_size)
    return model_or_name, type(model_or_name).__name__, size


@functools.lru_cache(maxsize=64)
def _meta_model(name: str, in_chans: int) -> nn.Module:
    with meta_build():
        return build_model(name, in_chans=in_chans)


def _graph(model: nn.Module, input_size: tuple[int, ...] | None) -> SizeGraph | None:
    """The size graph from a pass at ``input_size``, or at the first probe side that works."""
    if input_size is not None:
        try:
            return trace(model, input_size).graph
        except InputSizeError:
            channels = input_size[0]
    else:
        channels = _in_chans(model)
    for side in _PROBE_SIDES:
        try:
            return trace(model, (channels, side, side)).graph
        except InputSizeError:
            continue
    return None


def _in_chans(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _depends_on_input(graph: SizeGraph) -> list[bool]:
    depends: list[bool] = []
    for step in graph.steps:
        if isinstance(step, SizeNode):
            if step.kind == "input":
                depends.append(True)
            elif step.kind in ("window", "flat"):
                depends.append(depends[step.parent])
            else:
                depends.append(False)
        else:
            depends.append(False)
    return depends


def _range_from_graph(graph: SizeGraph, start: int) -> tuple[int, int | None] | None:
    low = next((s for s in range(1, start + 1) if evaluate(graph, s, s) is None), None)
    if low is None:
        return None
    depends = _depends_on_input(graph)
    fixed = any(
        isinstance(step, SizeCheck) and step.kind == "features" and depends[step.a]
        for step in graph.steps
    )
    if not fixed:
        return low, None
    high = low
    while high < _MAX_SIDE and evaluate(graph, high + 1, high + 1) is None:
        high += 1
    return low, high


def _range_by_tracing(model: nn.Module, channels: int, start: int) -> tuple[int, int | None]:
    # The graph has a size change the formulas cannot follow: run shape-only passes instead.
    def ok(side: int) -> bool:
        try:
            trace(model, (channels, side, side))
        except InputSizeError:
            return False
        return True

    lo, hi = 1, start
    while lo < hi:  # smallest working side, assuming larger sides keep working
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    if ok(2 * start) and ok(4 * start):
        return lo, None
    high = start
    while ok(high + 1):
        high += 1
    return lo, high


def valid_input_range(
    model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None = None
) -> tuple[int, int | None]:
    """The smallest and largest square input side the model takes.

    Args:
        model_or_name: a registry name or a module.
        input_size: ``(C, H, W)`` at which the model runs; a registered model's default, or for
            a module the first of a few common sizes that works, when ``None``.

    Returns:
        ``(min_side, max_side)``, ``max_side`` ``None`` when every side from ``min_side`` up
        works (global pooling before the classifier).

    Raises:
        InputSizeError: no size tried works, so there is no valid range to derive from.
    """
    model, name, size = _model_and_size(model_or_name, input_size)
    return _valid_range(model, name, size)


def _valid_range(
    model: nn.Module, name: str, size: tuple[int, ...] | None
) -> tuple[int, int | None]:
    graph = _graph(model, size)
    if graph is None:
        raise InputSizeError(f"{name} runs on none of the input sizes tried; pass input_size.")
    start = max(size[1:]) if size is not None else max(_PROBE_SIDES)
    channels = size[0] if size is not None else _in_chans(model)
    if graph.exact:
        found = _range_from_graph(graph, max(start, _PROBE_SIDES[-1]))
        if found is not None:
            return found
    return _range_by_tracing(model, channels, start)


def _describe(model: nn.Module, layer: str) -> str:
    try:
        return f"{layer} ({type(model.get_submodule(layer)).__name__})"
    except AttributeError:
        return layer


def _range_text(low: int, high: int | None) -> str:
    if high is None:
        return f"{low}+ pixels a side: resize the images to at least {low}×{low}"
    if high == low:
        return f"exactly {low}×{low}: resize the images to {low}×{low}"
    return f"{low}-{high} pixels a side: resize the images to {low}-{high} pixels"


def check_input(
    model_or_name: nn.Module | str, input_size: tuple[int, int, int], **options: object
) -> None:
    """Raise if the model cannot take an input of ``input_size`` = ``(C, H, W)``.

    The one input-size check of cnnzoo (summary, train, bench, export), so that a mistake reads
    the same whichever command meets it. Nothing runs on data: the check walks the size graph
    of a shape-only pass with the formulas, so it is meant to be called before a forward pass,
    a training run or an export.

    Args:
        model_or_name: a registry name or a module.
        input_size: ``(C, H, W)``.
        **options: for a registry name, the boolean options the model is built with that
            narrow its sizes (``ModelSpec.option_sizes``, e.g. ``aux_logits=True``: heads that
            run in training only, which the eval-mode pass does not see).

    Raises:
        InputSizeError: one line naming the first layer that breaks, its input size, the
            formula or constraint with the numbers substituted, and the valid input sides.
    """
    model, name, _ = _model_and_size(model_or_name, None)
    input_size = as_input_size(input_size)
    reference = None
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        reference = (input_size[0], *spec.input_size[1:])
        model = _meta_model(spec.name, input_size[0])
        _check_options(spec, tuple(input_size), options)
    graph = _graph(model, reference if reference is not None else tuple(input_size))
    if graph is None:
        raise InputSizeError(f"{name} runs on none of the input sizes tried; pass input_size.")
    if graph.exact:
        broken = evaluate(graph, input_size[1], input_size[2])
        if broken is None:
            return
        layer, what = broken
    else:
        try:
            trace(model, tuple(input_size))
            return
        except InputSizeError as error:
            layer, what = getattr(error, "layer", "a layer"), str(error)
    raise _size_error(model, name, tuple(input_size), layer, what, reference)


def _check_options(spec: ModelSpec, input_size: tuple[int, ...], options: dict) -> None:
    for option, (low, high) in spec.option_sizes.items():
        if options.get(option) and not (
            low <= min(input_size[1:]) and (high is None or max(input_size[1:]) <= high)
        ):
            shape = "×".join(str(s) for s in input_size)
            low, high = spec.size_range(**options)
            raise InputSizeError(
                f"{spec.name} at input {shape}: {option}=True adds layers that read a fixed-size "
                f"map; {spec.name} with {option}=True takes {_range_text(low, high)}."
            )


def _size_error(
    model: nn.Module,
    name: str,
    input_size: tuple[int, ...],
    layer: str,
    what: str,
    reference: tuple[int, ...] | None,
) -> InputSizeError:
    shape = "×".join(str(s) for s in input_size)
    try:
        low, high = _valid_range(model, name, reference)
        valid = f"; {name} takes {_range_text(low, high)}."
    except InputSizeError:
        valid = "."
    return InputSizeError(f"{name} at input {shape}: {_describe(model, layer)} {what}{valid}")


def explain_size_error(
    model_or_name: nn.Module | str,
    model: nn.Module,
    input_size: tuple[int, ...],
    error: Exception,
) -> Exception:
    """Turn an :class:`InputSizeError` raised during a shape-only pass into the one-line
    message of :func:`check_input` (layer, formula, valid range); other errors unchanged."""
    if not isinstance(error, InputSizeError) or not hasattr(error, "layer"):
        return error
    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        name, reference = spec.name, (input_size[0], *spec.input_size[1:])
    else:
        name, reference = type(model).__name__, None
    what = str(error).removeprefix(f"{error.layer} ").rstrip(".")
    return _size_error(model, name, input_size, error.layer, what, reference)
