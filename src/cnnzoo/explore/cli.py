"""The ``cnnzoo explore`` command: :func:`add_parser` registers it (``cnnzoo.cli`` calls it),
:func:`cmd_explore` runs it. Nothing heavy is imported until the command runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore",
        help="a local web page: every layer, channel and neuron of a model on your image",
        description="Start a local web app (127.0.0.1, with an access token) that shows a "
        "model's layers, their feature maps on an image, each neuron's computation with the "
        "real numbers, the top classes and class activation maps. With no options: LeNet-5 "
        "trained on digits, on a digit.",
    )
    p.add_argument(
        "--weights", action="append", default=[], metavar="W",
        help="a weight file (docs/weights.md); repeat to switch between several on the page",
    )  # fmt: skip
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME",
        help="registry name: with --weights, for a file that does not name its architecture; "
        "alone, the model with random weights (its layers, not a trained answer)",
    )  # fmt: skip
    p.add_argument("--image", help="an image file to show first (default: a digit)")
    p.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--no-browser", action="store_true", help="print the address only")
    p.add_argument(
        "--cache-gb", type=float, default=2.0, help="bound of the activation cache (2 GB)"
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="upload limit (20 MB)")
    p.set_defaults(func=cmd_explore)


def cmd_explore(args: argparse.Namespace, console: Console) -> int:
    """Build the session, print the address with its token, serve until Ctrl-C."""
    import secrets
    import socket
    import threading
    import webbrowser

    from cnnzoo.checks import check_int
    from cnnzoo.errors import InvalidArgumentError
    from cnnzoo.extras import require

    require("starlette", "uvicorn", needed_by="cnnzoo explore")
    from cnnzoo.explore.app import LOCAL_HOSTS, create_app
    from cnnzoo.explore.session import build_explorer

    check_int("--port", args.port, minimum=0)
    if args.port > 65535:
        raise InvalidArgumentError(f"--port {args.port} is not a port: give 0 to 65535.")
    if args.cache_gb <= 0 or args.max_upload_mb <= 0:
        raise InvalidArgumentError("--cache-gb and --max-upload-mb must be positive numbers.")
    explorer = build_explorer(
        args.weights, args.model, args.image, cache_bytes=int(args.cache_gb * 1e9),
        max_upload=int(args.max_upload_mb * 1e6),
    )  # fmt: skip
    wildcard = args.host in ("0.0.0.0", "::", "")
    if wildcard:
        print(
            f"warning: --host {args.host} serves every network this machine is on; anyone who "
            "reaches it and has the token sees your models and images.",
            file=sys.stderr,
        )
    hosts = None if wildcard else (*LOCAL_HOSTS, args.host)
    token = secrets.token_urlsafe(24)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        raise InvalidArgumentError(
            f"cannot listen on {args.host}:{args.port} ({err.strerror}): choose another --port "
            "(0 picks a free one)."
        ) from None
    sock.listen(128)  # connections wait from now on, while the server starts
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if wildcard else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/?token={token}"
    console.out(f"cnnzoo explore: {url}", highlight=False)
    console.out("Ctrl-C stops the server.", highlight=False)
    sys.stdout.flush()
    if not args.no_browser:
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    serve(create_app(explorer, token, hosts), sock)
    return 0


def serve(app: Any, sock: Any) -> None:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
