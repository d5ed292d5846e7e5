"""The model registry: one dict, one decorator, one factory.

A builder registered with :func:`register_model` carries the facts that tests and the CLI need
(paper, year, default input, valid input sizes). :func:`create_model` is the only public way to
build a model by name: it checks the name and the keyword arguments before anything is built.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnzoo.errors import (
    InputSizeError,
    InvalidArgumentError,
    UnknownArgumentError,
    UnknownModelError,
)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name.

    Attributes:
        name: registry name, e.g. ``"resnet50"``.
        family: model family (one file in ``cnnzoo/models``), e.g. ``"resnet"``.
        paper: the paper the architecture follows, with its arXiv id where it has one.
        year: the paper's year.
        input_size: default input ``(C, H, W)``, the size the paper trains and reports at.
        num_classes: default number of classes (1000 for ImageNet networks).
        min_size: smallest square input side for which every layer's output is at least 1.
        max_size: largest square input side, for models whose classifier takes a fixed size;
            ``None`` when any size from ``min_size`` up works.
        option_sizes: narrower valid sides ``(min, max)`` that apply when a boolean option is on,
            e.g. ``{"aux_logits": (223, 270)}`` for heads that read a fixed-size map.
        torchvision: the torchvision builder with the same state_dict, or ``None``.
        params: trainable parameters with the default classes and channels (published figure
            where there is one; the tests count the built model against it).
        macs: conv + linear multiply-adds of one image at ``input_size``, likewise.
        builder: the function that builds the model.
    """

    name: str
    family: str
    paper: str
    year: int
    input_size: tuple[int, int, int]
    num_classes: int
    min_size: int
    max_size: int | None
    option_sizes: dict[str, tuple[int, int | None]]
    torchvision: str | None
    params: int
    macs: int
    builder: Callable[..., nn.Module]

    @property
    def valid_sizes(self) -> str:
        """The valid square input sides as text, e.g. ``"63+"``, ``"227-258"`` or
        ``"31+ (aux_logits: 223-270)"``."""
        text = _range_text(self.min_size, self.max_size)
        for option, (low, high) in self.option_sizes.items():
            text += f" ({option}: {_range_text(low, high)})"
        return text

    def size_range(self, **options: object) -> tuple[int, int | None]:
        """The valid square sides ``(min, max)`` for a model built with ``options``."""
        low, high = self.min_size, self.max_size
        for option, (opt_low, opt_high) in self.option_sizes.items():
            if options.get(option):
                low = max(low, opt_low)
                high = opt_high if high is None else min(high, opt_high or high)
        return low, high

    def check_input(self, height: int, width: int, **options: object) -> None:
        """Raise :class:`InputSizeError` when ``height × width`` is outside the valid sizes of
        the model built with ``options``."""
        low, high = self.size_range(**options)
        valid = _range_text(low, high)
        if min(height, width) < low:
            raise InputSizeError(
                f"{self.name} needs inputs of at least {low}×{low} (got {height}×{width}): "
                f"resize the images to {low} or more."
            )
        if high is not None and max(height, width) > high:
            raise InputSizeError(
                f"{self.name} takes inputs of {valid} pixels a side, because its classifier "
                f"reads a fixed-size feature map (got {height}×{width}): resize or crop the "
                f"images to {self.input_size[1]}×{self.input_size[2]}."
            )

    def accepts(self) -> list[str]:
        """The keyword arguments the builder takes."""
        return list(inspect.signature(self.builder).parameters)

    def fit_side(self, side: int, **options: object) -> int:
        """The side to train the model built with ``options`` at, for data of ``side`` pixels
        (or a side asked for every model): ``side`` itself when the model takes it; else, for
        a model whose classifier reads a fixed-size map (``max_size`` set), its default side,
        the one it was designed for; else its minimum. The one rule for ``train`` (the data's
        native side) and ``compare`` (its common side)."""
        low, high = self.size_range(**options)
        if low <= side and (high is None or side <= high):
            return side
        return self.input_size[1] if high is not None else low


def _range_text(low: int, high: int | None) -> str:
    if high is None:
        return f"{low}+"
    return str(low) if high == low else f"{low}-{high}"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    *,
    family: str,
    paper: str,
    year: int,
    params: int,
    macs: int,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    min_size: int,
    max_size: int | None = None,
    option_sizes: dict[str, tuple[int, int | None]] | None = None,
    torchvision: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under its function name.

    The builder must take ``num_classes`` and ``in_chans`` as keyword arguments; every other
    keyword it takes is a family option that :func:`create_model` passes through.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        arguments = inspect.signature(builder).parameters
        missing = {"num_classes", "in_chans"} - set(arguments)
        if missing:
            raise RuntimeError(f"builder {name!r} must take {sorted(missing)}")
        _REGISTRY[name] = ModelSpec(
            name=name,
            family=family,
            paper=paper,
            year=year,
            input_size=input_size,
            num_classes=num_classes,
            min_size=min_size,
            max_size=max_size,
            option_sizes=dict(option_sizes or {}),
            torchvision=torchvision,
            params=params,
            macs=macs,
            builder=builder,
        )
        return builder

    return decorate


def _ensure_loaded() -> None:
    # Importing the package registers every family; done lazily so `registry` has no cycle.
    import cnnzoo.models  # noqa: F401


def list_models(family: str | None = None) -> list[str]:
    """Registered model names in registration order (families in paper order)."""
    _ensure_loaded()
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name.

    Raises:
        UnknownModelError: the name is not registered; the message lists close matches.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `cnnzoo list`."
        raise UnknownModelError(f"unknown model {name!r}: {hint}") from None


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name, e.g. ``"resnet50"`` (``cnnzoo list`` shows them all).
        num_classes: size of the classifier output; the model's default when ``None`` (the
            file's when ``weights`` is given).
        in_chans: input channels; the model's default (``input_size[0]``) when ``None`` (the
            file's when ``weights`` is given).
        weights: path of a weight file to load (see :func:`cnnzoo.weights.load_weights`, which
            also returns the load report; this prints nothing and keeps only the model).
        **kwargs: family options, e.g. ``aux_logits=True`` for GoogLeNet.

    Raises:
        UnknownModelError: the name is not registered.
        UnknownArgumentError: a keyword argument the model does not take (also a ``TypeError``).
        InvalidArgumentError: ``num_classes`` or ``in_chans`` is not a positive integer.
        WeightsError: the weight file cannot be used (see :func:`cnnzoo.weights.load_weights`).
    """
    spec = get_spec(name)
    accepted = spec.accepts()
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        options = [a for a in accepted if a not in ("num_classes", "in_chans")]
        takes = ", ".join(options) if options else "no options besides num_classes and in_chans"
        raise UnknownArgumentError(
            f"{name} got an unknown keyword argument {unknown[0]!r}; it takes: {takes}."
        )
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidArgumentError(f"{arg} must be a positive integer, got {value!r}.")
    if weights is not None:
        # Imported here: `weights` builds on this module, not the other way round.
        from cnnzoo.weights import load_weights

        return load_weights(name, weights, num_classes=num_classes, in_chans=in_chans, **kwargs)[0]
    num_classes = spec.num_classes if num_classes is None else num_classes
    in_chans = spec.input_size[0] if in_chans is None else in_chans
    return spec.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
