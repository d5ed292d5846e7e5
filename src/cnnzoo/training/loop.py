"""One epoch of training and one pass of evaluation — the loop, readable top to bottom."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.errors import TrainingDivergedError
from cnnzoo.training import fault as faults
from cnnzoo.training.distributed import Dist, all_finite, all_reduce_sum


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float


@dataclass
class EvalStats:
    loss: float
    acc: float
    top5: float | None
    confusion: torch.Tensor  # (classes, classes): rows true class, columns prediction
    images: int


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
) -> EpochStats:
    """Train for one pass over ``loader``; the scheduler steps once per optimisation step.

    Raises:
        TrainingDivergedError: the loss is NaN or infinite (checked every step: a wasted epoch
            of NaNs costs more than one ``isfinite``), naming the epoch, step and learning rate.
            Under DDP every process raises at the same step when any one's loss is not finite,
            before ``backward``: one stopping alone would leave the others waiting in DDP's
            gradient all-reduce for ever.
    """
    fault = faults.from_env()
    model.train()
    # Sums kept as Python numbers (the loss is read every step anyway, for the NaN check) and a
    # device tensor (correct predictions: no host sync for it); one tensor at the end.
    loss_sum, count = 0.0, 0
    correct = torch.zeros((), dtype=torch.int64, device=device)
    start = time.perf_counter()
    for step, (images, target) in enumerate(loader, start=1):
        if fault and fault.kills_at(epoch, step):
            faults.kill()
        images, target = images.to(device, non_blocking=True), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, logits = _loss(model(images), target, label_smoothing, aux_weight)
        if fault and fault.poisons(epoch, step, dist.rank):
            loss = loss * float("nan")
        loss_value = loss.item()
        if not all_finite(loss_value, dist):  # every process asks, at every step
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
        loss_sum += loss_value * n
        count += n
        correct += (logits.detach().argmax(1) == target).sum()
        if on_step is not None:
            on_step(n, loss_value)
    seconds = time.perf_counter() - start
    totals = torch.tensor([loss_sum, correct.item(), count], dtype=torch.float64)
    all_reduce_sum(totals, dist)
    loss_sum, correct, count = totals.tolist()
    return EpochStats(loss_sum / count, correct / count, int(count), seconds)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    device: torch.device,
    dist: Dist,
    channels_last: bool = False,
) -> EvalStats:
    """Loss, top-1, top-5 (with more than 5 classes) and the confusion matrix on ``loader``.

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
        logits = model(images).float()
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
