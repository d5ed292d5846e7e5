"""Top-k predictions for image files, prepared exactly as the weights ask.

Each file is read and fully decoded with PIL (:func:`read_image`) and prepared by the weights'
:class:`~cnnzoo.data.preprocessing.Preprocessing` (``model.pretrained_cfg.transform()``: the
colour policy of :mod:`cnnzoo.data.colour`, the resize rule, mean/std — the same object the
datasets' validation transform is built from, so a file is prepared as ``eval`` prepares a
dataset's image), and the batch goes through the model in eval mode. A file that cannot
be read is reported in :attr:`PredictionResult.failures` with a one-line reason, and every other
file is still predicted. See ``docs/predict.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from cnnzoo.checks import check_int
from cnnzoo.data.colour import colour_rule, source_kind
from cnnzoo.errors import CnnzooError, DataError, InvalidArgumentError

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

# --- preparing one image ---------------------------------------------------------------------


def image_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The preparation the weights ask for, as one callable from a PIL image to a tensor:
    ``pre.transform()`` (:meth:`cnnzoo.data.preprocessing.Preprocessing.transform`), the same
    object the datasets' validation transform is built from.

    Raises:
        InvalidArgumentError: an interpolation other than bilinear or bicubic, or mean/std whose
            length is not the number of channels.
    """
    return pre.transform()


def describe_transform(pre: Preprocessing) -> str:
    """One line saying what :func:`image_transform` does with these weights' preprocessing."""
    return pre.describe_steps()


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` with PIL and decode all of it, so that a damaged file fails here.

    Raises:
        DataError: the file is missing, a folder, not an image, truncated or corrupt, or too
            large (PIL's decompression-bomb limit); one line naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image file; give image files.")
    try:
        with Image.open(path) as img:
            img.load()  # lazy by default: without this a truncated file fails much later
            return img
    except Image.DecompressionBombError as err:
        raise DataError(f"{path} is refused as a decompression bomb ({_one_line(err)}).") from None
    except UnidentifiedImageError:
        raise DataError(
            f"{path} is not an image file PIL can read (corrupt, or another format); replace it "
            f"or leave it out."
        ) from None
    except OSError as err:  # "image file is truncated", "broken data stream", permissions ...
        raise DataError(f"{path} cannot be read: {_one_line(err)}; replace the file.") from None
    except Exception as err:  # PIL's decoders raise many kinds on corrupt data (SyntaxError, ...)
        raise DataError(
            f"{path} is damaged ({type(err).__name__}: {_one_line(err)}); replace the file."
        ) from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    """One of an image's best classes."""

    index: int
    name: str
    probability: float


@dataclass
class Prediction:
    """The prediction for one file.

    Attributes:
        path: the file as given.
        width: the image's width in pixels, as stored.
        height: its height.
        mode: its PIL mode (``"P+transparency"`` for a palette image with a transparent colour).
        colour_rule: how it was turned into the model's channels (``None``: used as it is).
        top: the best classes, most probable first.
    """

    path: str
    width: int
    height: int
    mode: str
    colour_rule: str | None
    top: list[TopK]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "colour_rule": self.colour_rule,
            "top": [
                {"index": t.index, "name": t.name, "probability": t.probability} for t in self.top
            ],
        }


@dataclass
class PredictionResult:
    """Predictions for every readable file, and why the others could not be read.

    Attributes:
        predictions: one per readable file, in the order given.
        failures: ``(path, one-line message)`` for each file that could not be read.
        topk: classes listed per image (the asked-for k, clipped to the number of classes).
        transform: :func:`describe_transform` of the weights' preprocessing.
        notes: what else the user should know (a clipped k, unnamed classes).
    """

    predictions: list[Prediction]
    failures: list[tuple[str, str]]
    topk: int
    transform: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (see ``docs/predict.md`` for the shape)."""
        return {
            "topk": self.topk,
            "preprocessing": self.transform,
            "predictions": [p.to_dict() for p in self.predictions],
            "failures": [{"path": path, "error": message} for path, message in self.failures],
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        """The predictions as text: a header line per file, then one line per class."""
        out = []
        for p in self.predictions:
            rule = f"; {p.colour_rule}" if p.colour_rule else ""
            out.append(f"{p.path} ({p.width}×{p.height} {p.mode}{rule})")
            width = max(len(t.name) for t in p.top)
            for rank, t in enumerate(p.top, start=1):
                out.append(f"  {rank}. {t.name:<{width}}  {100 * t.probability:6.2f}%  [{t.index}]")
        return out

    def failure_summary(self) -> str | None:
        """One line counting the files that could not be read (``None`` when all could)."""
        failed, read = len(self.failures), len(self.predictions)
        if not failed:
            return None
        if not read:
            return (
                "the file could not be read"
                if failed == 1
                else (f"none of the {failed} files could be read")
            )
        others = "the other one is" if read == 1 else f"the other {read} are"
        return f"{failed} of {failed + read} files could not be read; {others} predicted above"


# --- predicting ------------------------------------------------------------------------------


def predict_files(
    model: nn.Module,
    paths: Sequence[str | os.PathLike[str]],
    *,
    topk: int = 5,
    batch_size: int = 32,
) -> PredictionResult:
    """Predict the ``topk`` most probable classes of each image file.

    Images are prepared by ``model.pretrained_cfg.transform()`` (set by
    :func:`cnnzoo.weights.load_weights`) and run in batches of ``batch_size`` in eval mode under
    ``torch.inference_mode`` on the model's device; the model's train/eval mode is restored after.
    Probabilities are the softmax of the logits. A ``topk`` larger than the number of classes is
    clipped to it (and a note says so).

    Raises:
        InvalidArgumentError: ``topk`` or ``batch_size`` below 1, or a model without
            ``pretrained_cfg``.

    Files that cannot be read do not raise: they are listed in ``failures``.
    """
    for name, value in (("topk", topk), ("batch_size", batch_size)):
        check_int(name, value)
    pre = getattr(model, "pretrained_cfg", None)
    if pre is None:
        raise InvalidArgumentError(
            "the model has no pretrained_cfg: load it with cnnzoo.weights.load_weights, or set "
            "model.pretrained_cfg to a Preprocessing."
        )
    paths = list(paths)
    transform = image_transform(pre)
    result = PredictionResult([], [], topk, describe_transform(pre))
    classes = getattr(model, "num_classes", None)
    if isinstance(classes, int):  # known before any file is read, even if none can be
        _clip_topk(result, classes)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                batch, info = [], []
                for path in paths[start : start + batch_size]:
                    try:
                        img = read_image(path)
                        x = transform(img)
                    except CnnzooError as err:
                        result.failures.append((str(path), str(err)))
                        continue
                    kind = source_kind(img)
                    rule = colour_rule(kind, pre.input_size[0])
                    info.append((str(path), img.width, img.height, kind, rule))
                    batch.append(x)
                if batch:
                    logits = _logits(model(torch.stack(batch).to(device, dtype)))
                    _add(result, info, logits, pre.class_names)
    finally:
        model.train(was_training)
    return result


def _logits(output: Any) -> torch.Tensor:
    # Every zoo model returns a tensor in eval mode; a model that returns a named tuple
    # (torchvision's GoogLeNetOutputs, Hugging Face outputs) has its main logits first or in
    # `.logits`.
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the model returned {type(output).__name__}, not a tensor of logits")


def _add(
    result: PredictionResult,
    info: list[tuple[str, int, int, str, str | None]],
    logits: torch.Tensor,
    class_names: Sequence[str] | None,
) -> None:
    num_classes = logits.shape[1]
    _clip_topk(result, num_classes)
    names = _names(result, class_names, num_classes)
    probs, indices = logits.float().softmax(dim=1).topk(result.topk, dim=1)
    for (path, width, height, kind, rule), p, idx in zip(
        info, probs.tolist(), indices.tolist(), strict=True
    ):
        top = [TopK(i, names[i], prob) for i, prob in zip(idx, p, strict=True)]
        result.predictions.append(Prediction(path, width, height, kind, rule, top))


def _clip_topk(result: PredictionResult, num_classes: int) -> None:
    if result.topk > num_classes:
        result.notes.append(
            f"top-{result.topk} asked for, the model has {num_classes} classes: showing "
            f"{num_classes}"
        )
        result.topk = num_classes


def _names(
    result: PredictionResult, class_names: Sequence[str] | None, num_classes: int
) -> list[str]:
    fallback = [f"class {i}" for i in range(num_classes)]
    if class_names is None:
        note = "the weights name no classes: shown as 'class N' (N the output index)"
    elif len(class_names) != num_classes:
        note = (
            f"the weights name {len(class_names)} classes but the model has {num_classes} "
            f"outputs: shown as 'class N'"
        )
    else:
        return list(class_names)
    if note not in result.notes:
        result.notes.append(note)
    return fallback
