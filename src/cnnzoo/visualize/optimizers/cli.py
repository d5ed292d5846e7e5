"""The ``cnnzoo optimizers`` command: the paths of the classic optimizers on a 2-D surface, as a
figure. :func:`add_parser` registers it (``cnnzoo.cli.build_parser`` calls it); light to import
(no torch, no matplotlib), so that registering it costs ``cnnzoo --help`` nothing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnnzoo.errors import InvalidArgumentError

FUNCTION_NAMES = "rosenbrock, beale, saddle or ill-conditioned"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``optimizers`` on ``cnnzoo``'s subcommands."""
    p = sub.add_parser(
        "optimizers",
        help="the paths of SGD, momentum, Nesterov, AdaGrad, RMSprop and Adam on a 2-D surface",
    )
    p.add_argument("--function", required=True, help=FUNCTION_NAMES)
    p.add_argument("--steps", type=int, help="steps per optimizer (the function's default)")
    p.add_argument(
        "--lr", help="learning rates replacing the function's defaults, e.g. sgd=0.01,adam=0.1"
    )
    p.add_argument(
        "--gif", action="store_true", help="also an animation, beside --out with .gif for .png"
    )
    p.add_argument("--out", required=True, help="the figure, a .png file")
    p.set_defaults(func=cmd_optimizers)


def parse_lrs(text: str) -> dict[str, float]:
    """``"sgd=0.01,adam=0.1"`` → ``{"sgd": 0.01, "adam": 0.1}``; names and values are checked
    by :func:`cnnzoo.visualize.optimizers.paths.check_lrs`."""
    lrs: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip()
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not sep or not name or not math.isfinite(rate):
            raise InvalidArgumentError(
                f"--lr {text!r}: {item.strip()!r} is not optimizer=rate; write e.g. "
                "sgd=0.01,adam=0.1."
            )
        if name in lrs:
            raise InvalidArgumentError(f"--lr {text!r} gives {name} twice; give it once.")
        lrs[name] = rate
    return lrs


def cmd_optimizers(args: argparse.Namespace, console: Console) -> None:
    """Check the options, compute the paths, draw them, print where each optimizer ended."""
    from cnnzoo.checks import check_int
    from cnnzoo.visualize.optimizers.draw import animate_paths, draw_paths
    from cnnzoo.visualize.optimizers.paths import LABELS, check_lrs, get_surface, optimizer_paths

    try:
        get_surface(args.function)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"--function: {err}") from None
    if args.steps is not None:
        check_int("--steps", args.steps)
    lrs = check_lrs(parse_lrs(args.lr), "--lr") if args.lr is not None else {}
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InvalidArgumentError(f"--out {args.out!r} must be a .png file, e.g. paths.png.")
    if not out.parent.is_dir():
        raise InvalidArgumentError(
            f"--out {args.out!r}: the folder {str(out.parent)!r} does not exist; create it first."
        )

    paths = optimizer_paths(args.function, steps=args.steps, lrs=lrs)
    s = paths.surface
    table = Table(title=f"{s.name}: {s.formula}, from {s.start}, {paths.steps} steps")
    for col in ("optimizer", "lr", "end point", "f", "distance to minimum"):
        table.add_column(col, justify="left" if col == "optimizer" else "right")
    for name, points in paths.points.items():
        x, y = points[-1]
        dist = min(math.hypot(x - mx, y - my) for mx, my in s.minima)
        end = f"diverged at step {len(points)}" if paths.diverged[name] else f"({x:.4g}, {y:.4g})"
        table.add_row(LABELS[name], f"{paths.lrs[name]:g}", end, f"{s.f(x, y):.4g}", f"{dist:.3g}")
    console.print(table)
    console.print(f"what it shows: {s.shows}", highlight=False)
    draw_paths(paths, out)
    console.print(f"figure: {out}", highlight=False)
    if args.gif:
        gif = animate_paths(paths, out.with_suffix(".gif"))
        console.print(f"animation: {gif}", highlight=False)
