"""The paths of the classic optimizers on 2-D loss surfaces, from ``torch.optim`` itself.

:func:`optimizer_paths` starts every optimizer at the surface's start point, a 2-element
float64 parameter, and records the point after each step: pure data (arrays), which
:func:`.draw.draw_paths` turns into a figure and a web page can plot its own way.
The optimizers are the trainer's, built by :func:`cnnzoo.training.build_optimizer` (all of its
``OPTIMIZERS`` but AdamW, which equals Adam without weight decay) with momentum 0.9.
tests/test_optimizers_paths.py checks each path against :mod:`cnnzoo.scratch.optim`'s NumPy update
rules step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnzoo.checks import check_int, check_number, did_you_mean
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.training.optim import build_optimizer

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
MOMENTUM = 0.9
LABELS = {
    "sgd": "SGD",
    "momentum": f"momentum (μ {MOMENTUM:g})",
    "nesterov": f"Nesterov (μ {MOMENTUM:g})",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
}
# A path that leaves this box (or stops being finite) has diverged; it is cut there, so that a
# too-large learning rate shows as a short path marked "diverged", never as an overflow.
DIVERGED = 1e6


@dataclass(frozen=True)
class Surface:
    """A loss surface f(x, y) with what the figure needs.

    ``f`` uses only arithmetic, so it takes torch tensors (the optimizers' gradients) and NumPy
    arrays (the contour grid) alike.
    """

    name: str
    formula: str
    f: Callable[[Any, Any], Any]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    steps: int
    lrs: Mapping[str, float]
    shows: str  # the textbook behaviour the defaults demonstrate (docs/optimizers.md)
    saddle: tuple[float, float] | None = None
    log_levels: bool = True  # contour levels spaced in log(f − f_min): deep narrow valleys


def _rosenbrock(x: Any, y: Any) -> Any:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(x: Any, y: Any) -> Any:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _saddle(x: Any, y: Any) -> Any:
    return x**2 - y**2 + y**4 / 2


def _ill_conditioned(x: Any, y: Any) -> Any:
    return 0.01 * x**2 + y**2


SURFACES: dict[str, Surface] = {
    s.name: s
    for s in (
        Surface(
            "rosenbrock", "f = (1 − x)² + 100 (y − x²)²", _rosenbrock, (-1.2, 1.0), ((1.0, 1.0),),
            (-2.0, 2.0), (-1.0, 3.0), 500,
            {"sgd": 2e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 0.5, "rmsprop": 0.02,
             "adam": 0.2},
            "a long, curved, flat-floored valley: SGD (at twice their rate) is still far from "
            "the minimum after 500 steps where momentum, Nesterov and Adam arrive; AdaGrad's "
            "shrinking steps stall it on the way; RMSprop's steps keep their size and rattle "
            "across the floor",
        ),
        Surface(
            "beale", "f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", _beale,
            (1.0, 1.4), ((3.0, 0.5),), (-1.0, 4.5), (-1.5, 2.0), 300,
            {"sgd": 0.02, "momentum": 5e-3, "nesterov": 5e-3, "adagrad": 1.0, "rmsprop": 0.05,
             "adam": 0.2},
            "steep walls around a flat plateau, gradients of very different sizes: SGD, at a "
            "rate near the largest it survives (0.05 diverges), is still short of the minimum "
            "after 300 steps; momentum and Nesterov at a quarter of its rate, and the adaptive "
            "methods, which scale each coordinate's step by its own gradients, reach it",
        ),
        Surface(
            "saddle", "f = x² − y² + y⁴/2", _saddle, (-1.5, 1e-3), ((0.0, -1.0), (0.0, 1.0)),
            (-2.0, 2.0), (-1.6, 1.6), 100,
            {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.3, "rmsprop": 0.02,
             "adam": 0.05},
            "a saddle point at (0, 0), approached along the line where it looks like a "
            "minimum: SGD lingers there (the gradient that leads away is tiny), the adaptive "
            "methods, which scale it up, leave at once",
            saddle=(0.0, 0.0),
            log_levels=False,
        ),
        Surface(
            "ill-conditioned", "f = 0.01 x² + y²", _ill_conditioned, (-5.0, -2.0),
            ((0.0, 0.0),), (-5.5, 5.5), (-2.5, 2.5), 150,
            {"sgd": 0.8, "momentum": 0.3, "nesterov": 0.3, "adagrad": 0.5, "rmsprop": 0.1,
             "adam": 0.3},
            "a bowl 100 times more curved in y than in x: SGD zig-zags across it and crawls "
            "along it; momentum overshoots the minimum and still arrives far sooner, Nesterov "
            "overshoots less; AdaGrad's steps shrink; RMSprop and Adam scale each coordinate "
            "by its own gradients, so their first steps are as long in x as in y",
        ),
    )
}  # fmt: skip
FUNCTIONS = tuple(SURFACES)


@dataclass
class Paths:
    """The optimizers' paths on one surface: ``points[name]`` is (k + 1, 2), the start and
    the point after each of the k steps taken (k < ``steps`` when the path diverged)."""

    surface: Surface
    steps: int
    lrs: dict[str, float]
    points: dict[str, np.ndarray] = field(default_factory=dict)
    diverged: dict[str, bool] = field(default_factory=dict)


class _Point(nn.Module):
    """The 2-element parameter the optimizers move: a module, so that the trainer's own
    :func:`~cnnzoo.training.build_optimizer` builds them."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(start, dtype=torch.float64))


def get_surface(function: str) -> Surface:
    """The surface named ``function``; an unknown name is one line with the close matches."""
    if function not in SURFACES:
        hint = did_you_mean(function, FUNCTIONS) or f" (choose one of {', '.join(FUNCTIONS)})"
        raise InvalidArgumentError(f"unknown function {function!r}{hint}.")
    return SURFACES[function]


def _check_optimizer(name: str, where: str) -> str:
    if name not in OPTIMIZERS:
        hint = did_you_mean(name, OPTIMIZERS) or f" (choose among {', '.join(OPTIMIZERS)})"
        raise InvalidArgumentError(f"{where}: unknown optimizer {name!r}{hint}.")
    return name


def check_lrs(lrs: Mapping[str, object], name: str = "lrs") -> dict[str, float]:
    """``lrs`` if every key is an optimizer of :data:`OPTIMIZERS` and every value > 0."""
    return {
        _check_optimizer(opt, name): float(check_number(f"{name} {opt}", lr, low=0, above=True))
        for opt, lr in lrs.items()
    }


def optimizer_paths(
    function: str,
    *,
    steps: int | None = None,
    lrs: Mapping[str, float] | None = None,
    optimizers: Sequence[str] = OPTIMIZERS,
) -> Paths:
    """Run optimizers of :data:`OPTIMIZERS` on the surface ``function`` from its start.

    Args:
        function: one of :data:`FUNCTIONS`.
        steps: steps per optimizer (the surface's default when None).
        lrs: learning rates that replace the surface's defaults, by optimizer name.
        optimizers: which optimizers to run (all by default), in :data:`OPTIMIZERS`' order.

    Returns:
        The :class:`Paths`, float64 points.

    Raises:
        InvalidArgumentError: an unknown function or optimizer (close matches suggested),
            ``steps`` not a positive integer, a learning rate not > 0.
    """
    surface = get_surface(function)
    steps = surface.steps if steps is None else check_int("steps", steps)
    rates = dict(surface.lrs) | check_lrs(lrs or {})
    chosen = {_check_optimizer(name, "optimizers") for name in optimizers}
    result = Paths(surface, steps, {n: r for n, r in rates.items() if n in chosen})
    for name in (n for n in OPTIMIZERS if n in chosen):
        holder = _Point(surface.start)
        w = holder.w
        opt = build_optimizer(holder, name, lr=rates[name], momentum=MOMENTUM)
        points = [w.detach().clone()]
        diverged = False
        for _ in range(steps):
            opt.zero_grad()
            surface.f(w[0], w[1]).backward()
            opt.step()
            point = w.detach().clone()
            if not bool(torch.isfinite(point).all()) or float(point.abs().max()) > DIVERGED:
                diverged = True
                break
            points.append(point)
        result.points[name] = torch.stack(points).numpy()
        result.diverged[name] = diverged
    return result


def steps_to_reach(path: np.ndarray, target: tuple[float, float], tol: float) -> int | None:
    """The first step after which the path stays within ``tol`` of ``target``, or None."""
    dist = np.hypot(path[:, 0] - target[0], path[:, 1] - target[1])
    outside = np.nonzero(dist > tol)[0]
    if len(outside) == 0:
        return 0
    first = int(outside[-1]) + 1
    return first if first < len(path) else None
