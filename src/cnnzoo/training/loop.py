"""One epoch of training and one pass of evaluation — the loop, readable top to bottom."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.errors import TrainingDivergedError
from cnnzoo.training import fault as faults
from cnnzoo.training.distributed import Dist, agree, all_reduce_sum


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float
    stopped: bool = False  # a signal ended the epoch early: the figures are of a part of it


@dataclass
class EvalStats:
    loss: float
    acc: float
    top5: float | None
    confusion: torch.Tensor  # (classes, classes): rows true class, columns prediction
    images: int


@dataclass
class Position:
    """How far a run is inside an epoch: the steps done and this process's sums so far. A
    mid-epoch checkpoint holds it, so that a resumed epoch reports what an uninterrupted one
    would (the loss sum is the same float, added in the same order)."""

    epoch: int
    lr: float  # at the epoch's start: metrics.jsonl's "lr"
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    images: int = 0
    seconds: float = 0.0


def _loss(
    outputs: torch.Tensor | tuple[torch.Tensor, ...],
    target: torch.Tensor,
    smoothing: float,
    aux_weight: float,
):
    """Cross-entropy of the main logits, plus GoogLeNet's auxiliary losses weighted as in the
    paper (0.3 each) when the model returns them (training mode only)."""
    if isinstance(outputs, tuple):  # GoogLeNetOutputs(logits, aux_logits2, aux_logits1)
        logits, *aux = outputs
        loss = F.cross_entropy(logits, target, label_smoothing=smoothing)
        for a in aux:
            loss = loss + aux_weight * F.cross_entropy(a, target, label_smoothing=smoothing)
        return loss, logits
    return F.cross_entropy(outputs, target, label_smoothing=smoothing), outputs


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epoch: int,
    device: torch.device,
    dist: Dist,
    label_smoothing: float = 0.0,
    aux_weight: float = 0.3,
    amp: bool = False,
    channels_last: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    position: Position | None = None,
    checkpoint_every: int = 0,
    save: Callable[[Position], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> EpochStats:
    """Train for one pass over ``loader``; the scheduler steps once per optimisation step.

    A resumed epoch passes the ``position`` its checkpoint held and a loader that starts after
    its last step; the position is kept up to date as steps go. ``save(position)`` runs after
    every ``checkpoint_every``-th step of the epoch (0: never) and after the step at which
    ``stop_requested()`` (a signal) became true on any process; the epoch then ends there, its
    statistics marked ``stopped``.

    Raises:
        TrainingDivergedError: the loss is NaN or infinite (checked every step: a wasted epoch
            of NaNs costs more than one ``isfinite``), naming the epoch, step and learning rate.
            Under DDP every process raises at the same step when any one's loss is not finite,
            before ``backward``: one stopping alone would leave the others waiting in DDP's
            gradient all-reduce for ever.
    """
    fault = faults.from_env()
    model.train()
    pos = position if position is not None else Position(epoch, optimizer.param_groups[0]["lr"])
    # Correct predictions stay a device tensor (no host sync per step) until a save reads them.
    correct = torch.tensor(pos.correct, dtype=torch.int64, device=device)
    start, seconds_before = time.perf_counter(), pos.seconds
    last = pos.step + len(loader)  # the epoch's last step writes the epoch's own checkpoint
    stop = False
    for step, (images, target) in enumerate(loader, start=pos.step + 1):
        if fault and fault.kills_at(epoch, step, dist.rank):
            faults.kill()
        images, target = images.to(device, non_blocking=True), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, logits = _loss(model(images), target, label_smoothing, aux_weight)
        if fault and fault.poisons(epoch, step, dist.rank):
            loss = loss * float("nan")
        loss_value = loss.item()
        # Every process asks both questions at every step, in one all-reduce: all stop together.
        finite, stop = agree(loss_value, stop_requested is not None and stop_requested(), dist)
        if not finite:
            lr = optimizer.param_groups[0]["lr"]
            where = "" if math.isfinite(loss_value) else f"the loss became {loss_value} "
            if not where:  # this process's loss is fine; another's is not
                where = "the loss became non-finite on another process "
            raise TrainingDivergedError(
                f"{where}at epoch {epoch}, step {step} (lr {lr:.3g}); the last good checkpoint "
                "is kept: lower --lr or add --warmup."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        n = target.numel()
        pos.step, pos.loss_sum, pos.images = step, pos.loss_sum + loss_value * n, pos.images + n
        correct += (logits.detach().argmax(1) == target).sum()
        if on_step is not None:
            on_step(n, loss_value)
        due = checkpoint_every and step % checkpoint_every == 0 and step < last
        if save is not None and (stop or due):
            pos.correct = int(correct.item())
            pos.seconds = seconds_before + time.perf_counter() - start
            save(pos)
        if stop:
            break
    seconds = seconds_before + time.perf_counter() - start
    if stop:  # every process stopped at this step: the epoch's figures are never reported
        return EpochStats(math.nan, math.nan, pos.images, seconds, stopped=True)
    totals = torch.tensor([pos.loss_sum, correct.item(), pos.images], dtype=torch.float64)
    all_reduce_sum(totals, dist)
    loss_sum, correct_sum, count = totals.tolist()
    return EpochStats(loss_sum / count, correct_sum / count, int(count), seconds)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    device: torch.device,
    dist: Dist,
    amp: bool = False,
    channels_last: bool = False,
) -> EvalStats:
    """Loss, top-1, top-5 (with more than 5 classes) and the confusion matrix on ``loader``.

    ``amp`` evaluates under the same bfloat16 autocast as training: the validation figures are
    those of the arithmetic the model trains in (the loss and top-k are computed in fp32).

    Under DDP each process sees a disjoint part of the validation set (no padding), and the sums
    are added up, so every image counts exactly once.
    """
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    totals = torch.zeros(3, dtype=torch.float64)  # loss·n, top-5 correct, n
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # Without amp no autocast context at all: a caller's own (e.g. around cnnzoo.evaluate)
        # stays in force.
        with torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext():
            logits = model(images)
        logits = logits.float()
        n = target.numel()
        pred = logits.argmax(1)
        confusion.index_put_(
            (target.cpu(), pred.cpu()), torch.ones(n, dtype=torch.float64), accumulate=True
        )
        top5 = 0.0
        if num_classes > 5:
            top5 = (logits.topk(5, 1).indices == target[:, None]).any(1).sum().item()
        loss = F.cross_entropy(logits, target, reduction="sum").item()
        totals += torch.tensor([loss, top5, n], dtype=torch.float64)
    all_reduce_sum(totals, dist)
    all_reduce_sum(confusion, dist)
    loss_sum, top5_correct, count = totals.tolist()
    count = max(count, 1.0)
    acc = confusion.diagonal().sum().item() / count
    return EvalStats(
        loss_sum / count,
        acc,
        top5_correct / count if num_classes > 5 else None,
        confusion,
        int(count),
    )
