"""``cnnzoo explain conv|pool|relu|softmax|flatten|forward``: the mechanism, worked with the
user's numbers. ``cli._add_explain`` registers these topics with :func:`add_topics`; each sets
``args.mechanism`` to its command. Heavy modules (torch, the data) are imported inside the
commands, so that building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from cnnzoo.errors import InvalidArgumentError


def _cells(text: str) -> int | None:
    """``--cells``: a count, or ``all`` (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidArgumentError(
            f"--cells {text!r} must be a whole number ≥ 0 or 'all' (0 is all as well)."
        )
    return value or None


def _print(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _print_json(console: Console, data: dict[str, Any]) -> None:
    console.out(json.dumps(data), highlight=False)


def _conv_values(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from cnnzoo.analysis import mechanism as m
    from cnnzoo.checks import check_int

    size = m.parse_shape("--input", args.input) if args.input else None
    kernel = m.parse_shape("--kernel", args.kernel) if args.kernel else None
    if args.channels is not None:
        check_int("--channels", args.channels)
    if args.values in m.VALUE_KINDS:
        c = args.channels or 1
        size, kernel = size or (5, 5), kernel or (3, 3)
        return m.make_values(args.values, (c, *size), (c, *kernel), args.seed)
    data = m.read_values(args.values, ("input", "kernel"))
    x, k = data["input"], data["kernel"]
    # Options given alongside a file are checked against it; those left out come from it.
    c = args.channels or len(x)
    size, kernel = size or (len(x[0]), len(x[0][0])), kernel or (len(k[0]), len(k[0][0]))
    how = f"--input {size[0]}x{size[1]}, --channels {c}"
    m.check_file_shape(args.values, "input", x, (c, *size), how)
    m.check_file_shape(args.values, "kernel", k, (c, *kernel), f"--kernel {kernel[0]}x{kernel[1]}")
    return x, k, data["bias"]


def cmd_conv(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import mechanism as m

    cells = _cells(args.cells)
    x, k, bias = _conv_values(args)
    walk = m.conv_walkthrough(x, k, bias, args.stride, args.padding, args.dilation)
    if args.json:
        _print_json(console, walk.to_dict())
    else:
        _print(console, m.render_conv(walk, cells))
    if args.gif or args.frames:
        from cnnzoo.analysis import sliding

        out = args.gif or args.frames
        count = (sliding.save_gif if args.gif else sliding.save_frame_grid)(walk, out)
        more = len(walk.cells) - count
        note = f" (the first {count}; {more} more cells not drawn)" if more else ""
        print(f"wrote {out}: {count} frame(s){note}")


def cmd_pool(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import mechanism as m
    from cnnzoo.checks import check_choice

    cells = _cells(args.cells)
    check_choice("--kind", args.kind, m.POOL_KINDS)
    size = m.parse_shape("--input", args.input) if args.input else None
    if args.values in m.VALUE_KINDS:
        grids, _, _ = m.make_values(args.values, (1, *(size or (4, 4))), None, args.seed)
    else:
        grids = m.read_values(args.values, ("input",))["input"]
        expected = (1, *(size or (len(grids[0]), len(grids[0][0]))))
        how = f"--input {expected[1]}x{expected[2]}, one channel: pooling acts on each alone"
        m.check_file_shape(args.values, "input", grids, expected, how)
    walk = m.pool_walkthrough(grids[0], args.kind, args.size, args.stride, args.seed)
    if args.json:
        _print_json(console, walk.to_dict())
    else:
        _print(console, m.render_pool(walk, cells))


def cmd_relu(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import mechanism as m

    _print(console, m.relu(m.parse_numbers("--values", args.values)).text())


def cmd_softmax(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import mechanism as m

    _print(console, m.softmax(m.parse_numbers("--values", args.values)).text())


def cmd_flatten(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import mechanism as m

    _print(console, m.flatten(m.parse_chw("--input", args.input)).text())


def cmd_forward(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.forward_walk import forward_walk, render_forward

    walk = forward_walk(args.model, args.weights, args.index, args.seed)
    _print(console, render_forward(walk).text())


def add_topics(topics: argparse._SubParsersAction) -> None:
    """The mechanism's topics under ``cnnzoo explain``."""
    values_help = (
        "random (seeded integers), ramp (0, 1, 2, …) or FILE.json with "
        '{"input": rows or channels of rows, "kernel": ..., "bias": 0} (docs/analyzer.md)'
    )
    cells_help = "output cells written out in full: a number or all (9)"
    t = topics.add_parser("conv", help="a convolution cell by cell, with the numbers")
    t.add_argument("--input", help="input side HxW (5x5; a values file gives its own)")
    t.add_argument("--kernel", help="kernel side HxW (3x3)")
    t.add_argument("--stride", type=int, default=1, help="stride S (1)")
    t.add_argument("--padding", type=int, default=0, help="zero padding P (0)")
    t.add_argument("--dilation", type=int, default=1, help="dilation D (1)")
    t.add_argument("--channels", type=int, default=None, help="input channels C (1)")
    t.add_argument("--values", default="random", help=values_help)
    t.add_argument("--seed", type=int, default=0, help="seed of --values random (0)")
    t.add_argument("--cells", default="9", help=cells_help)
    t.add_argument("--json", action="store_true", help="every cell's record as JSON")
    pics = t.add_mutually_exclusive_group()
    pics.add_argument("--gif", metavar="OUT.gif", help="the sliding kernel as an animation")
    pics.add_argument("--frames", metavar="OUT.png", help="the same frames as one grid")
    t.set_defaults(mechanism=cmd_conv)

    t = topics.add_parser("pool", help="max, average, min or stochastic pooling, window by window")
    t.add_argument("--kind", default="max", help="max, avg, min or stochastic (max)")
    t.add_argument("--input", help="input side HxW (4x4; a values file gives its own)")
    t.add_argument("--size", type=int, default=2, help="window side (2)")
    t.add_argument("--stride", type=int, default=None, help="stride (the window side)")
    t.add_argument("--values", default="random", help='random, ramp or FILE.json {"input": rows}')
    t.add_argument("--seed", type=int, default=0, help="seed of the values and of the draw (0)")
    t.add_argument("--cells", default="9", help="windows written out in full: a number or all (9)")
    t.add_argument("--json", action="store_true", help="every window's record as JSON")
    t.set_defaults(mechanism=cmd_pool)

    t = topics.add_parser("relu", help="ReLU on a few numbers")
    t.add_argument("--values", default="-2,-0.5,0,1.5,3", help="numbers (-2,-0.5,0,1.5,3)")
    t.set_defaults(mechanism=cmd_relu)
    t = topics.add_parser("softmax", help="softmax of a few logits, in its stable form")
    t.add_argument("--values", default="2,1,0.1", help="logits (2,1,0.1)")
    t.set_defaults(mechanism=cmd_softmax)
    t = topics.add_parser("flatten", help="a C×H×W map as the vector a dense layer reads")
    t.add_argument("--input", default="2x3x3", help="map size CxHxW (2x3x3)")
    t.set_defaults(mechanism=cmd_flatten)
    t = topics.add_parser("forward", help="one digit through a network, step by step")
    t.add_argument("--model", default="lenet5", help="registry name (lenet5)")
    t.add_argument("--weights", help="a weight file (random weights without one)")
    t.add_argument("--index", type=int, default=0, help="which validation digit (0)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random weights (0)")
    t.set_defaults(mechanism=cmd_forward)
