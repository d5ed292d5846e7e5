"""Training the NumPy LeNet-5 with minibatch gradient descent: shuffle, forward, loss, backward,
update, and an accuracy on held-out images after every epoch. The arrays come in prepared
(``cnnzoo scratch-train`` gives it the digits exactly as ``cnnzoo train`` prepares them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnnzoo.scratch.lenet import LeNet5, init_params
from cnnzoo.scratch.optim import make_optimizer

SCHEDULES = ("cosine", "constant")


@dataclass
class EpochResult:
    """One epoch: mean training loss, validation accuracy, seconds since training began."""

    epoch: int
    train_loss: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """The trained network and one :class:`EpochResult` per epoch."""

    model: LeNet5
    epochs: list[EpochResult] = field(default_factory=list)


def accuracy(model: LeNet5, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Fraction of ``x`` whose largest logit is the label (eval mode)."""
    training, model.training = model.training, False
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model.forward(x[start : start + batch_size])
        correct += int((logits.argmax(axis=1) == y[start : start + batch_size]).sum())
    model.training = training
    return correct / len(x)


def train_lenet5(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    optimizer: str = "adam",
    schedule: str = "cosine",
    max_steps: int | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train a freshly initialised LeNet-5 (tanh, average pooling: cnnzoo's ``lenet5``).

    Args:
        train_x, train_y, val_x, val_y: images (N, 1, 32, 32) and labels (N,).
        epochs: passes over the training images.
        lr: learning rate of ``optimizer`` (a name of :data:`cnnzoo.scratch.optim.OPTIMIZERS`).
        schedule: ``"cosine"``: the rate at step k of T is ``lr (1 + cos(π k/T)) / 2``, from
            lr down towards 0 (the small last steps settle the accuracy); ``"constant"``: lr.
        batch_size: images per step; the last batch of an epoch may be smaller.
        seed: initial weights and the order of the images.
        max_steps: stop after this many steps in all (a short check), the epoch's accuracy
            still measured.
        on_epoch: called with each epoch's result.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    rng = np.random.default_rng(seed)
    model = LeNet5(init_params(rng, num_classes=int(train_y.max()) + 1, dtype=train_x.dtype))
    opt = make_optimizer(optimizer, lr)
    result = TrainResult(model)
    start, steps = time.perf_counter(), 0
    total = epochs * math.ceil(len(train_x) / batch_size)
    for epoch in range(1, epochs + 1):
        model.training = True
        order = rng.permutation(len(train_x))
        losses = []
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            if schedule == "cosine":
                opt.lr = lr * (1 + math.cos(math.pi * steps / total)) / 2
            loss, grads = model.loss_and_grads(train_x[batch], train_y[batch])
            opt.step(model.params, grads)
            losses.append(loss)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        row = EpochResult(
            epoch, float(np.mean(losses)), accuracy(model, val_x, val_y),
            time.perf_counter() - start,
        )  # fmt: skip
        result.epochs.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if max_steps is not None and steps >= max_steps:
            break
    return result
