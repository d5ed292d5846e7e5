"""The ``cnnzoo visualize`` command: :func:`add_parser` registers it (``cnnzoo.cli`` calls it),
:func:`cmd_visualize` runs it. Nothing heavy is imported until the command runs, so that
registering it costs ``cnnzoo --help`` nothing."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

CAM_CHOICES = ("gradcam", "gradcam++", "scorecam")  # cam.CAM_METHODS, without importing torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize",
        help="pictures of a trained network: filters, feature maps, class activation maps",
        description="Draw the first layer's filters, the feature maps of chosen layers and the "
        "class activation maps of image files, into DIR/index.html (self-contained) and PNGs.",
    )
    p.add_argument("--weights", required=True, metavar="W", help="a weight file (docs/weights.md)")
    p.add_argument(
        "--model",
        metavar="NAME",
        help="registry name, for files that do not name their architecture",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--layers",
        metavar="L1,L2",
        help="comma-separated layer names as `cnnzoo summary` lists them",
    )
    which.add_argument("--stages", action="store_true", help="the end of every stage (the default)")
    p.add_argument(
        "--cam", default="gradcam", metavar="METHOD",
        help=f"class activation method: {', '.join(CAM_CHOICES)} (gradcam; scorecam runs the "
        "model once per channel: slow)",
    )  # fmt: skip
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--class", dest="target", type=int, metavar="K", help="map this class index"
    )
    target.add_argument(
        "--topk", type=int, default=3, metavar="K", help="map the k most probable (3)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (DIR/index.html and PNGs)"
    )
    p.set_defaults(func=cmd_visualize)


def cmd_visualize(args: argparse.Namespace, console: Console) -> int:
    """Run ``cnnzoo visualize``; print one line per image and where the page is."""
    from cnnzoo.checks import check_choice, check_int
    from cnnzoo.errors import InvalidArgumentError
    from cnnzoo.visualize.report import visualize_files
    from cnnzoo.weights import load_weights

    check_int("--topk", args.topk)
    check_choice("--cam", args.cam, CAM_CHOICES)
    layers = None
    if args.layers is not None:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
        if not layers:
            raise InvalidArgumentError(
                f"--layers {args.layers!r} names no layer; give names as `cnnzoo summary` "
                "lists them, e.g. --layers layer1,layer4."
            )
    model, report = load_weights(args.model, args.weights)
    print("\n".join(report.lines()), file=sys.stderr)
    result = visualize_files(
        model, args.images, args.out, layers=layers, cam=args.cam, target=args.target,
        topk=args.topk,
    )  # fmt: skip
    lines = []
    for pictures in result.images:
        top = ", ".join(f"{name} {100 * p:.1f}%" for _, name, p in pictures.top)
        lines.append(f"{pictures.path}: {top} → {pictures.folder}/")
    lines += [f"note: {note}" for note in result.notes]
    lines.append(f"wrote {result.index} (filters, {len(result.images)} image(s))")
    console.out("\n".join(lines), highlight=False)
    return 0
