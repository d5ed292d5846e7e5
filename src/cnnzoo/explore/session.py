"""Building a ``cnnzoo explore`` session from the command line's options: the models (weight
files, registry names, or the shipped LeNet-5 trained on digits) and the first image (a file,
or a digit of the built-in data's validation split)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.explore.engine import DEFAULT_CACHE_BYTES, DEFAULT_MAX_UPLOAD, Explorer, ModelEntry

DEFAULT_WEIGHTS = "lenet5_digits.safetensors"
DEFAULT_DIGIT = 0  # index in the digits' fixed validation split


def default_weights() -> Path:
    """The shipped LeNet-5 trained on digits (how it was made: docs/explore.md)."""
    return Path(str(resources.files("cnnzoo.explore").joinpath(DEFAULT_WEIGHTS)))


def default_digit() -> tuple[Image.Image, str]:
    """One 8×8 digit of the built-in data's validation split, as a grey image."""
    from cnnzoo.data.datasets import _digits

    arrays = _digits()
    pixels, label = arrays.val_x[DEFAULT_DIGIT, 0].numpy(), int(arrays.val_y[DEFAULT_DIGIT])
    img = Image.fromarray((np.asarray(pixels) * 255).round().astype(np.uint8), mode="L")
    return img, f"digit {label} (built-in validation image {DEFAULT_DIGIT})"


def model_entry(
    model_name: str | None,
    weights: str | None,
    key: str,
    *,
    side: int | None = None,
    num_classes: int | None = None,
) -> ModelEntry:
    """One model of the session: loaded from ``weights`` or, with a name only, built with
    random weights (``num_classes`` outputs) and the preprocessing assumed for it; ``side``
    prepares images at that size instead of the model's own (a quicker look)."""
    from cnnzoo.explore.engine import with_input_size
    from cnnzoo.weights import load_weights

    if weights is not None:
        model, report = load_weights(model_name, weights)
        label = f"{report.model} ({Path(weights).name})"
        if side is not None:
            with_input_size(model, side)
        return ModelEntry(key, label, model, "; ".join(report.notes))
    assert model_name is not None
    from cnnzoo.registry import build_model, get_spec
    from cnnzoo.weights.preprocessing import assumed_preprocessing
    from cnnzoo.weights.report import LoadReport

    spec = get_spec(model_name)
    built = build_model(spec.name, num_classes=num_classes)
    report = LoadReport("", spec.name, "random")
    pre = assumed_preprocessing(spec, spec.input_size[0], report)
    built.pretrained_cfg = pre  # type: ignore[assignment]  # torch types attributes as modules
    if side is not None:
        with_input_size(built, side)
    built.eval()
    note = "random weights: the layers' shapes and mechanism are real, the answers are not"
    return ModelEntry(key, f"{spec.name} (random weights)", built, note)


def build_explorer(
    weights: list[str],
    models: list[str],
    image: str | None,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_upload: int = DEFAULT_MAX_UPLOAD,
) -> Explorer:
    """The session for ``cnnzoo explore``'s options.

    ``--weights`` files pair with ``--model`` names in order (one name for all of them, or
    none: each file names its architecture); ``--model`` alone builds each model with random
    weights; neither: the shipped LeNet-5 trained on digits.

    Raises:
        InvalidArgumentError: names and files that do not pair.
        WeightsError, UnknownModelError, DataError: a file or name that cannot be used.
    """
    pairs: list[tuple[str | None, str | None]]
    if weights:
        if len(models) not in (0, 1, len(weights)):
            raise InvalidArgumentError(
                f"{len(models)} --model for {len(weights)} --weights: give one --model per "
                "--weights (in the same order), one for all, or none."
            )
        names = models if len(models) == len(weights) else [*models] * len(weights)
        pairs = [(names[i] if names else None, w) for i, w in enumerate(weights)]
    elif models:
        pairs = [(m, None) for m in models]
    else:
        pairs = [("lenet5", str(default_weights()))]
    entries = [model_entry(name, w, f"m{i}") for i, (name, w) in enumerate(pairs)]
    explorer = Explorer(entries, cache_bytes=cache_bytes, max_upload=max_upload)
    if image is not None:
        from cnnzoo.predict import read_image

        explorer.add_pil(read_image(image), Path(image).name)
    else:
        img, name = default_digit()
        explorer.add_pil(img, name)
    return explorer
