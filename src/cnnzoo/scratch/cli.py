"""The ``cnnzoo scratch-train`` command: the NumPy LeNet-5 of :mod:`cnnzoo.scratch` trained on
the built-in digits, prepared as ``cnnzoo train --model lenet5 --dataset digits`` prepares them
(the project's fixed 1,437/360 split, resized to 32×32, normalised by the training split's
statistics). :func:`add_parser` registers it (``cnnzoo.cli.build_parser`` calls it); light to
import, so that registering it costs ``cnnzoo --help`` nothing.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    import numpy as np

EPOCHS = 15
LR = 2e-3
BATCH_SIZE = 32
SEED = 0
OPTIMIZER = "adam"
SCHEDULE = "cosine"
# Measured on 2 cores (docs/scratch.md): a training step's matrix products are small, and
# OpenBLAS on 2 threads spent more time handing them out than computing (7× slower there).
THREADS = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``scratch-train`` on ``cnnzoo``'s subcommands."""
    p = sub.add_parser(
        "scratch-train",
        help="train the NumPy LeNet-5 (cnnzoo.scratch) on the digits, no torch in the loop",
    )
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"passes over the data ({EPOCHS})")
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate ({LR:g})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"({BATCH_SIZE})")
    p.add_argument("--seed", type=int, default=SEED, help=f"weights and order ({SEED})")
    p.add_argument(
        "--optimizer", default=OPTIMIZER,
        help=f"sgd, momentum, nesterov, adagrad, rmsprop or adam ({OPTIMIZER})",
    )  # fmt: skip
    p.add_argument(
        "--schedule",
        default=SCHEDULE,
        help=f"cosine (from --lr towards 0) or constant ({SCHEDULE})",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (a quick look)"
    )
    p.add_argument(
        "--threads", type=int, default=THREADS,
        help=f"NumPy's BLAS threads ({THREADS}: LeNet-5's small products are fastest on one)",
    )  # fmt: skip
    p.set_defaults(func=cmd_scratch_train)


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The built-in digits as ``cnnzoo train --model lenet5`` gets them, as NumPy arrays:
    training images (1437, 1, 32, 32) float32 and labels, then validation images and labels."""
    import numpy as np
    import torch

    from cnnzoo.data import load_dataset

    bundle = load_dataset("digits", image_size=32)
    arrays = []
    for split in (bundle.train, bundle.val):
        # Item by item: each goes through the split's own transform (the normalisation).
        arrays.append(torch.stack([split[i][0] for i in range(len(split))]).numpy())
        arrays.append(np.array([int(split[i][1]) for i in range(len(split))]))
    return arrays[0], arrays[1], arrays[2], arrays[3]


def cmd_scratch_train(args: argparse.Namespace, console: Console) -> None:
    """Check the options, train, print one line per epoch and the final accuracy."""
    from threadpoolctl import threadpool_limits

    from cnnzoo.checks import check_choice, check_int, check_number
    from cnnzoo.scratch.optim import OPTIMIZERS
    from cnnzoo.scratch.train import SCHEDULES, EpochResult, train_lenet5

    check_int("--epochs", args.epochs)
    check_number("--lr", args.lr, low=0, above=True)
    check_int("--batch-size", args.batch_size)
    check_int("--seed", args.seed, minimum=0)
    check_choice("--optimizer", args.optimizer, OPTIMIZERS)
    check_choice("--schedule", args.schedule, SCHEDULES)
    if args.max_steps is not None:
        check_int("--max-steps", args.max_steps)
    check_int("--threads", args.threads)

    train_x, train_y, val_x, val_y = digits_arrays()
    console.print(
        f"NumPy LeNet-5 on digits: {len(train_x):,} training, {len(val_x):,} validation images "
        f"at 32×32; {args.optimizer} lr {args.lr:g} ({args.schedule}), batch {args.batch_size}, "
        f"seed {args.seed}, {args.threads} BLAS thread(s)",
        highlight=False,
    )

    def report(row: EpochResult) -> None:
        console.print(
            f"epoch {row.epoch}: train loss {row.train_loss:.4f}, "
            f"val accuracy {row.val_accuracy:.2%} ({row.seconds:.1f} s)",
            highlight=False,
        )

    with threadpool_limits(args.threads, user_api="blas"):
        result = train_lenet5(
            train_x, train_y, val_x, val_y,
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
            optimizer=args.optimizer, schedule=args.schedule, max_steps=args.max_steps,
            on_epoch=report,
        )  # fmt: skip
    best = max(result.epochs, key=lambda r: r.val_accuracy)
    last = result.epochs[-1]
    console.print(
        f"final val accuracy {last.val_accuracy:.2%} (best {best.val_accuracy:.2%} at epoch "
        f"{best.epoch}) in {last.seconds:.1f} s",
        highlight=False,
    )
