"""Accuracy of a model on a labelled dataset: top-1, top-k, loss, per class, confusion matrix.

The pass over the data is the training loop's own :func:`cnnzoo.training.loop.evaluate` (one
definition of "validation accuracy" in the project); this module checks the inputs, adds the
per-class figures and the summary, and draws the confusion matrix. See ``docs/predict.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnzoo.checks import check_int
from cnnzoo.data.loader import make_loader
from cnnzoo.errors import DataError, InvalidArgumentError
from cnnzoo.training import loop
from cnnzoo.training.distributed import Dist

TOPK = 5  # the k of "top-5", lowered to the number of classes when there are fewer


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        images: number of images evaluated.
        class_names: one name per class.
        top1: fraction of images whose most probable class is the true one.
        k: the k of :attr:`topk` (5, or the number of classes when there are fewer).
        topk: fraction of images whose true class is among the ``k`` most probable.
        loss: mean cross-entropy (natural log) over the images.
        confusion: ``(classes, classes)`` int64 counts, rows the true class, columns the
            predicted (top-1) class.
        reference: the same figures for the ``reference`` model :func:`evaluate` was given
            (e.g. the fp32 model an int8 runner was made from); ``None`` without one.
        top1_agreement: with a reference, the fraction of images whose top-1 class is the same
            for both; else ``None``.
    """

    images: int
    class_names: list[str]
    top1: float
    k: int
    topk: float
    loss: float
    confusion: torch.Tensor
    reference: EvalResult | None = None
    top1_agreement: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def top1_change(self) -> float | None:
        """Top-1 minus the reference's top-1 (a fraction); ``None`` without a reference."""
        return None if self.reference is None else self.top1 - self.reference.top1

    def comparison(self, label: str, reference_label: str = "the reference") -> str:
        """One line on the change from the reference, e.g. ``"int8 top-1 97.50% vs fp32 97.78%
        (-0.28 points); top-1 agreement with fp32 99.17%"``."""
        if self.reference is None or self.top1_agreement is None:
            raise InvalidArgumentError(
                "this result has no reference to compare with: pass reference= to evaluate."
            )
        return (
            f"{label} top-1 {100 * self.top1:.2f}% vs {reference_label} "
            f"{100 * self.reference.top1:.2f}% ({100 * (self.top1 - self.reference.top1):+.2f} "
            f"points); top-1 agreement with {reference_label} {100 * self.top1_agreement:.2f}%"
        )

    @property
    def per_class_count(self) -> list[int]:
        """Images of each true class."""
        return self.confusion.sum(1).tolist()

    @property
    def per_class_correct(self) -> list[int]:
        """Images of each class predicted as that class (top-1)."""
        return self.confusion.diagonal().tolist()

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Top-1 accuracy of each class; ``None`` for a class with no images."""
        return [
            c / n if n else None
            for c, n in zip(self.per_class_correct, self.per_class_count, strict=True)
        ]

    def worst_classes(self, n: int = 5) -> list[int]:
        """Indices of the ``n`` classes with the lowest top-1 accuracy (classes with no images
        left out; ties broken by more images first, then index)."""
        acc, count = self.per_class_accuracy, self.per_class_count
        present = [i for i, a in enumerate(acc) if a is not None]
        return sorted(present, key=lambda i: (acc[i], -count[i], i))[:n]

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (see ``docs/predict.md`` for the shape)."""
        return {
            "images": self.images,
            "num_classes": self.num_classes,
            "top1": self.top1,
            "topk": {"k": self.k, "accuracy": self.topk},
            "loss": self.loss,
            "per_class": [
                {"index": i, "name": name, "images": n, "correct": c, "accuracy": a}
                for i, (name, n, c, a) in enumerate(
                    zip(
                        self.class_names,
                        self.per_class_count,
                        self.per_class_correct,
                        self.per_class_accuracy,
                        strict=True,
                    )
                )
            ],
            "confusion": self.confusion.tolist(),
        } | self._reference_dict()

    def _reference_dict(self) -> dict[str, Any]:
        if self.reference is None:
            return {}
        return {
            "reference": {
                "top1": self.reference.top1,
                "topk": {"k": self.reference.k, "accuracy": self.reference.topk},
                "loss": self.reference.loss,
                "top1_change": self.top1_change,
                "top1_agreement": self.top1_agreement,
            }
        }

    def lines(self, worst: int = 5) -> list[str]:
        """A printable summary: counts, top-1, top-k, loss and the ``worst`` weakest classes."""
        correct = sum(self.per_class_correct)
        out = [
            f"images: {self.images:,} in {self.num_classes} classes",
            f"top-1 accuracy: {100 * self.top1:.2f}% ({correct:,}/{self.images:,})",
        ]
        topk = f"top-{self.k} accuracy: {100 * self.topk:.2f}%"
        if self.k == self.num_classes:
            topk += f" (k = the number of classes: always 100%; top-{TOPK} needs more classes)"
        out += [topk, f"mean cross-entropy loss: {self.loss:.4f}"]
        if worst > 0 and self.num_classes > 1:
            out.append("weakest classes (top-1 accuracy):")
            acc, count, right = (
                self.per_class_accuracy,
                self.per_class_count,
                self.per_class_correct,
            )
            for i in self.worst_classes(worst):
                a = acc[i]
                assert a is not None  # worst_classes leaves out the classes with no images
                out.append(
                    f"  {i:>4} {self.class_names[i]}: {100 * a:.2f}% ({right[i]}/{count[i]})"
                )
        return out

    def save_confusion(self, path: str | Path, title: str = "") -> None:
        """Draw the confusion matrix (rows normalised per true class) to ``path`` (its suffix
        gives the format, e.g. ``.png``), written atomically."""
        from cnnzoo import plots

        plots.confusion_matrix(self.confusion, self.class_names, Path(path), title)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    class_names: Sequence[str],
    batch_size: int = 256,
    num_workers: int = 0,
    reference: nn.Module | None = None,
) -> EvalResult:
    """Evaluate ``model`` on every item ``(image tensor, label)`` of ``dataset``, in order.

    The images must already be prepared for the model (e.g. the ``val`` split of
    ``cnnzoo.data.load_dataset(..., preprocessing=model.pretrained_cfg)``). The model runs in
    eval mode under ``torch.inference_mode`` on its own device; its train/eval mode is restored
    after.

    Args:
        model: a classifier returning logits ``(N, num_classes)``.
        dataset: a map-style dataset of ``(float tensor (C, H, W), int label)``.
        num_classes: the number of classes (and of the model's outputs).
        class_names: one name per class.
        batch_size: images per forward pass.
        num_workers: data-loader worker processes (0: load in this process).
        reference: another classifier to measure against, e.g. the fp32 model of an int8
            runner: its figures go to ``result.reference``, with ``top1_change`` and
            ``top1_agreement``. The data is streamed twice (once per model) in batches; only
            each image's top-1 class is kept between the passes.

    Raises:
        InvalidArgumentError: ``class_names`` not ``num_classes`` long, the model's classes not
            ``num_classes``, or a batch size / worker count out of range.
        DataError: an empty dataset, or a label outside ``0 … num_classes - 1``.
    """
    _check_arguments(model, num_classes, class_names, batch_size, num_workers)
    if reference is not None:
        _check_arguments(reference, num_classes, class_names, batch_size, num_workers)
    # torch's Dataset declares no length; a map-style one has one (len() says so otherwise).
    if not isinstance(dataset, Sized):
        raise TypeError(f"object of type {type(dataset).__name__!r} has no len()")
    if len(dataset) == 0:
        raise DataError("the dataset to evaluate has no images; check the dataset and its path.")
    result, top1 = _one_pass(model, dataset, num_classes, class_names, batch_size, num_workers)
    if reference is not None:
        result.reference, ref_top1 = _one_pass(
            reference, dataset, num_classes, class_names, batch_size, num_workers
        )
        result.top1_agreement = (top1 == ref_top1).double().mean().item()
    return result


def _one_pass(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    class_names: Sequence[str],
    batch_size: int,
    num_workers: int,
) -> tuple[EvalResult, torch.Tensor]:
    """The figures of ``model`` on ``dataset`` and its top-1 class of every image, in order."""
    loader = make_loader(
        dataset, batch_size=batch_size, shuffle=False, seed=0, epoch=0, num_workers=num_workers
    )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    recorder = _TopOne(model)
    try:
        with torch.inference_mode():
            stats = loop.evaluate(
                recorder, _checked(loader, num_classes), num_classes, device=device, dist=Dist()
            )
    finally:
        model.train(was_training)
    # Counts in float64 are exact up to 2**53 images.
    confusion = stats.confusion.round().to(torch.int64)
    k = min(TOPK, num_classes)
    # loop.evaluate measures top-5 only with more than 5 classes; with k = the number of
    # classes every true class is among the k best, so top-k is 1 by definition.
    topk = stats.top5 if stats.top5 is not None else 1.0
    result = EvalResult(stats.images, list(class_names), stats.acc, k, topk, stats.loss, confusion)
    return result, torch.cat(recorder.top1) if recorder.top1 else torch.zeros(0, dtype=torch.long)


class _TopOne(nn.Module):
    """``model`` unchanged, keeping the top-1 class of every row it returns (8 bytes an image,
    where keeping the logits or the images would grow with the classes or the pixels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.top1: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        self.top1.append(logits.argmax(1).cpu())
        return logits


def _check_arguments(
    model: nn.Module,
    num_classes: int,
    class_names: Sequence[str],
    batch_size: int,
    num_workers: int,
) -> None:
    for name, value, low in (
        ("num_classes", num_classes, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
    ):
        check_int(name, value, minimum=low)
    if len(class_names) != num_classes:
        raise InvalidArgumentError(
            f"{len(class_names)} class names for {num_classes} classes: give one name per class."
        )
    model_classes = getattr(model, "num_classes", None)
    if isinstance(model_classes, int) and model_classes != num_classes:
        raise InvalidArgumentError(
            f"the model has {model_classes} classes, the dataset {num_classes}: evaluate weights "
            f"trained on this dataset's classes."
        )


def _checked(loader: DataLoader, num_classes: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # A label out of range would otherwise surface as an index error deep inside the loop.
    for images, target in loader:
        target = torch.as_tensor(target)
        bad = (target < 0) | (target >= num_classes)
        if bad.any():
            label = int(target[bad][0])
            raise DataError(
                f"label {label} is outside 0…{num_classes - 1} ({num_classes} classes): the "
                f"dataset and the class list disagree."
            )
        yield images, target
