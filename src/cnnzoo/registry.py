"""The model registry: one dict, one decorator, one builder.

A builder registered with :func:`register_model` carries the facts that tests and the CLI need
(paper, year, default input, valid input sizes). :func:`build_model` builds a registered model
by name with random weights, checking the name and the keyword arguments before anything is
built; ``cnnzoo.create_model`` (:mod:`cnnzoo.factory`) adds loading a weight file on top.

This module imports nothing of cnnzoo but its errors: the families register themselves when
``cnnzoo.models`` is imported (``import cnnzoo`` does it first), and weight loading sits above
(timm's split of registry and factory), so that nothing here calls back up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnzoo.checks import check_int, did_you_mean
from cnnzoo.errors import UnknownArgumentError, UnknownModelError


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
    keyword it takes is a family option that :func:`build_model` passes through.
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


def _filled() -> dict[str, ModelSpec]:
    # The families register themselves when `cnnzoo.models` is imported; this module never
    # imports them (it sits below them). An empty registry is a programming error, not a user's.
    if not _REGISTRY:
        raise RuntimeError(
            "no model is registered: look models up through cnnzoo.models (or cnnzoo), which "
            "imports every family"
        )
    return _REGISTRY


def list_models(family: str | None = None) -> list[str]:
    """Registered model names in registration order (families in paper order)."""
    return [n for n, s in _filled().items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name.

    Raises:
        UnknownModelError: the name is not registered; the message lists close matches.
    """
    try:
        return _filled()[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY) or " (see `cnnzoo list`)"
        raise UnknownModelError(f"unknown model {name!r}{hint}.") from None


def check_arguments(
    name: str, num_classes: object, in_chans: object, kwargs: dict[str, object]
) -> ModelSpec:
    """The spec of ``name`` once the arguments of a build are known to be good.

    Raises:
        UnknownModelError: the name is not registered.
        UnknownArgumentError: a keyword argument the model does not take (also a ``TypeError``).
        InvalidArgumentError: ``num_classes`` or ``in_chans`` is not a positive integer.
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
        if value is not None:
            check_int(arg, value)
    return spec


def build_model(
    name: str, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs: object
) -> nn.Module:
    """Build a registered model by name, with random weights.

    Args:
        name: registry name, e.g. ``"resnet50"`` (``cnnzoo list`` shows them all).
        num_classes: size of the classifier output; the model's default when ``None``.
        in_chans: input channels; the model's default (``input_size[0]``) when ``None``.
        **kwargs: family options, e.g. ``aux_logits=True`` for GoogLeNet.

    Raises:
        UnknownModelError: the name is not registered.
        UnknownArgumentError: a keyword argument the model does not take (also a ``TypeError``).
        InvalidArgumentError: ``num_classes`` or ``in_chans`` is not a positive integer.
    """
    spec = check_arguments(name, num_classes, in_chans, kwargs)
    num_classes = spec.num_classes if num_classes is None else num_classes
    in_chans = spec.input_size[0] if in_chans is None else in_chans
    return spec.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
