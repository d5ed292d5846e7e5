"""What ``cnnzoo explore`` computes, kept apart from HTTP: the models and images of a session,
the activations of every layer for a (model, image) pair in a byte-bounded LRU cache, and the
answers of the JSON API (graph, layer maps, a neuron's computation, top-k, CAM, filters).

Layers are the analyzer's rows (:func:`cnnzoo.analysis.summarize`): one row per call of a leaf
module, in execution order, addressed by its index (a module called twice, such as a ResNet
block's shared ReLU, has two rows). Every call's output is kept, and the input of every layer
whose neuron can be worked out (convolution, pooling, linear, batch norm).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from cnnzoo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

DEFAULT_CACHE_BYTES = 2 * 1024**3
DEFAULT_MAX_UPLOAD = 20 * 1024**2
# Below PIL's own limit (Image.MAX_IMAGE_PIXELS, ~89 M, which only warns up to twice that):
# a 40-megapixel photo is still accepted, a 20000×20000 "bomb" is refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
CHANNELS_PER_PAGE = 64
TOP_CONTRIBUTIONS = 10
ELEMENTWISE = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.LeakyReLU, nn.GELU, nn.Identity, nn.Dropout,
)  # fmt: skip
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
KEEP_INPUT = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, *POOLS)


class UploadError(InvalidArgumentError):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(InvalidArgumentError):
    """A model, image, layer or position the session does not have (HTTP 404)."""


@dataclass
class ModelEntry:
    """One model of the session: ``key`` addresses it in the API, ``label`` shows it."""

    key: str
    label: str
    model: nn.Module
    note: str = ""
    rows: list[Any] = field(default_factory=list)
    summary: Any = None


@dataclass
class ImageEntry:
    key: str
    name: str
    image: Image.Image  # decoded, as uploaded; each model prepares it its own way


@dataclass
class Activations:
    """One forward pass of one image: logits, every row's output and the kept inputs."""

    x: torch.Tensor  # (1, C, H, W), as the model sees the image
    logits: torch.Tensor  # (1, K)
    outputs: list[torch.Tensor | None]
    inputs: list[torch.Tensor | None]
    nbytes: int
    scales: dict[int, tuple[float, float]] = field(default_factory=dict)


def preprocessing_of(model: nn.Module) -> Preprocessing:
    """The model's :class:`Preprocessing` (set by ``load_weights`` or the session)."""
    pre = getattr(model, "pretrained_cfg", None)
    if pre is None:
        raise InvalidArgumentError(
            f"{type(model).__name__} has no pretrained_cfg: load it with "
            "cnnzoo.weights.load_weights, or set one."
        )
    return cast("Preprocessing", pre)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.2f} MB"


def _tensor_bytes(tensors: list[torch.Tensor | None]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in value if isinstance(t, torch.Tensor)), None)
    return None


def read_upload(data: bytes, name: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an uploaded file, refusing what is not a whole image of a known type.

    Raises:
        UploadError: empty, too large (bytes or pixels), not an image, or damaged.
    """
    if not data:
        raise UploadError(f"{name} is empty (0 bytes): choose an image file.")
    if len(data) > max_bytes:
        raise UploadError(
            f"{name} is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit: "
            "choose a smaller image (or start the server with a larger --max-upload-mb).",
            413,
        )
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # PIL refuses over twice its limit when it opens
        raise UploadError(
            f"{name} has too many megapixels (over PIL's decompression-bomb limit, "
            f"{Image.MAX_IMAGE_PIXELS or 0:,} pixels): resize it first.",
            413,
        ) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"{name} is not an image (accepted: {', '.join(IMAGE_FORMATS)}).", 415
        ) from None
    except Exception as err:  # PIL raises many kinds on a damaged header
        raise UploadError(f"{name} cannot be read as an image ({type(err).__name__}).") from None
    if img.format not in IMAGE_FORMATS:
        raise UploadError(
            f"{name} is a {img.format} file; accepted: {', '.join(IMAGE_FORMATS)}.", 415
        )
    w, h = img.size
    if w * h > max_pixels:  # checked on the header, before anything is decoded
        raise UploadError(
            f"{name} is {w}×{h} = {w * h / 1e6:.0f} megapixels, over the "
            f"{max_pixels / 1e6:.0f}-megapixel limit (decompression bombs are refused): "
            "resize it first.",
            413,
        )
    try:
        img.load()
    except Image.DecompressionBombError:
        raise UploadError(f"{name} is refused as a decompression bomb: resize it.", 413) from None
    except Exception as err:  # "image file is truncated", "broken data stream" ...
        text = " ".join(str(err).split())[:120] or type(err).__name__
        raise UploadError(f"{name} is damaged ({text}): upload the whole file.") from None
    return img


class Explorer:
    """The state of one ``cnnzoo explore`` session. Thread-safe: one lock around torch."""

    def __init__(
        self,
        models: list[ModelEntry],
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not models:
            raise InvalidArgumentError("explore needs at least one model.")
        self.models = {m.key: m for m in models}
        self.images: OrderedDict[str, ImageEntry] = OrderedDict()
        self.cache: OrderedDict[tuple[str, str], Activations] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.max_upload = max_upload
        self.max_pixels = max_pixels
        self.lock = threading.RLock()
        self.notes: list[str] = []
        for entry in models:
            self._analyze(entry)

    # --- models and images ------------------------------------------------------------------

    def _analyze(self, entry: ModelEntry) -> None:
        from cnnzoo.analysis import summarize

        pre = preprocessing_of(entry.model)
        entry.summary = summarize(entry.model, tuple(pre.input_size))
        entry.rows = entry.summary.layers

    def model(self, key: str) -> ModelEntry:
        if key not in self.models:
            raise NotFoundError(f"no model {key!r}; the session has {', '.join(self.models)}.")
        return self.models[key]

    def image(self, key: str) -> ImageEntry:
        if key not in self.images:
            raise NotFoundError(f"no image {key!r}; upload it again.")
        return self.images[key]

    def add_image(self, data: bytes, name: str) -> ImageEntry:
        """Decode and keep an uploaded image; its key is its content's hash."""
        img = read_upload(data, name, self.max_upload, self.max_pixels)
        for entry in self.models.values():  # refused now, not at the first click
            try:
                preprocessing_of(entry.model).transform()(img)
            except Exception as err:  # the colour policy refuses some modes (16-bit, ...)
                text = " ".join(str(err).split())[:160] or type(err).__name__
                raise UploadError(
                    f"{name} ({img.mode}, {img.format}) cannot be prepared for "
                    f"{entry.label}: {text}"
                ) from None
        key = hashlib.sha256(data).hexdigest()[:16]
        with self.lock:
            if key not in self.images:
                self.images[key] = ImageEntry(key, name, img)
            self.images.move_to_end(key)
            while len(self.images) > 32:  # uploads are few; the old ones leave with their maps
                old, _ = self.images.popitem(last=False)
                for k in [k for k in self.cache if k[1] == old]:
                    del self.cache[k]
        return self.images[key]

    def add_pil(self, img: Image.Image, name: str) -> ImageEntry:
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return self.add_image(buffer.getvalue(), name)

    # --- activations ------------------------------------------------------------------------

    def activations(self, model_key: str, image_key: str) -> Activations:
        """Every row's output for this image, from the cache or one forward pass.

        The cache holds at most ``cache_bytes``; the least recently used pairs leave first. A
        pair larger than the whole bound is computed, answered and not kept (each click then
        runs the forward pass again: slower, never more memory than one pass).
        """
        entry, image = self.model(model_key), self.image(image_key)
        with self.lock:
            key = (model_key, image_key)
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
            acts = self._forward(entry, image)
            if acts.nbytes <= self.cache_bytes:
                self.cache[key] = acts
                while sum(a.nbytes for a in self.cache.values()) > self.cache_bytes:
                    self.cache.popitem(last=False)
            elif not any(n.startswith(entry.label) and "do not fit" in n for n in self.notes):
                self.notes.append(
                    f"{entry.label}'s activations ({_size(acts.nbytes)}) do not fit the "
                    f"{_size(self.cache_bytes)} cache: each request runs the model again"
                )
            return acts

    def prepared(self, entry: ModelEntry, image: ImageEntry) -> torch.Tensor:
        pre = preprocessing_of(entry.model)
        return pre.transform()(image.image).unsqueeze(0)  # (1, C, H, W)

    def _forward(self, entry: ModelEntry, image: ImageEntry) -> Activations:
        from cnnzoo.visualize.maps import untouched

        model = entry.model
        x = self.prepared(entry, image)
        outputs: list[torch.Tensor | None] = []
        inputs: list[torch.Tensor | None] = []

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            out = _first_tensor(output)
            # Copies: an in-place activation after this layer would change the tensor.
            outputs.append(None if out is None else out.detach().float().clone())
            arg = _first_tensor(args) if isinstance(module, KEEP_INPUT) else None
            inputs.append(None if arg is None else arg.detach().float().clone())

        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with untouched(model), torch.no_grad():
                model.eval()
                logits = _first_tensor(model(x))
        finally:
            for h in handles:
                h.remove()
        assert logits is not None
        if len(outputs) != len(entry.rows):  # the analyzer's trace and this pass must agree
            raise InvalidArgumentError(
                f"{entry.label}: {len(outputs)} layer calls ran, the analyzer lists "
                f"{len(entry.rows)}; this model cannot be explored layer by layer."
            )
        acts = Activations(x, logits.detach().float(), outputs, inputs, 0)
        acts.nbytes = _tensor_bytes([*outputs, *inputs])
        return acts

    # --- answers ----------------------------------------------------------------------------

    def graph(self, model_key: str) -> dict[str, Any]:
        """The analyzer's rows grouped by block, in execution order."""
        entry = self.model(model_key)
        pre = preprocessing_of(entry.model)
        blocks: list[dict[str, Any]] = []
        for i, row in enumerate(entry.rows):
            if not blocks or blocks[-1]["name"] != row.block:
                blocks.append({"name": row.block, "layers": []})
            blocks[-1]["layers"].append(
                {
                    "index": i,
                    "name": row.name,
                    "type": row.type,
                    "output_shape": list(row.output_shape or ()),
                    "params": row.params,
                    "macs": row.macs,
                    "rf_size": list(row.rf_size) if row.rf_size else None,
                    "rf_jump": list(row.rf_jump) if row.rf_jump else None,
                    "kernel": list(row.kernel) if row.kernel else None,
                    "stride": list(row.stride) if row.stride else None,
                    "padding": row.padding
                    if isinstance(row.padding, str)
                    else (list(row.padding) if row.padding else None),
                }
            )
        return {
            "model": entry.key,
            "label": entry.label,
            "note": entry.note,
            "input_size": list(pre.input_size),
            "params": entry.summary.params,
            "macs": entry.summary.macs,
            "blocks": blocks,
            "layers": len(entry.rows),
        }

    def _row(self, entry: ModelEntry, layer: int) -> Any:
        if not 0 <= layer < len(entry.rows):
            raise NotFoundError(
                f"layer {layer} is out of range: {entry.label} has layers 0 to "
                f"{len(entry.rows) - 1}."
            )
        return entry.rows[layer]

    def _output(self, acts: Activations, layer: int) -> torch.Tensor:
        out = acts.outputs[layer]
        if out is None:
            raise NotFoundError(f"layer {layer} gives no tensor.")
        return out[0]  # (C, H, W) or (F,)

    def scale(self, acts: Activations, layer: int) -> tuple[float, float]:
        """The layer's one colour scale: symmetric around 0 when it has negative values."""
        if layer not in acts.scales:
            out = self._output(acts, layer)
            lo, hi = float(out.min()), float(out.max())
            if lo < 0:
                peak = max(-lo, hi, 1e-12)
                acts.scales[layer] = (-peak, peak)
            else:
                acts.scales[layer] = (0.0, max(hi, 1e-12))
        return acts.scales[layer]

    def layer(self, model_key: str, image_key: str, layer: int, page: int = 0) -> dict[str, Any]:
        """A layer's channels (one page of them) with their ranges and the layer's scale."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        acts = self.activations(model_key, image_key)
        out = self._output(acts, layer)
        lo, hi = self.scale(acts, layer)
        channels = out.shape[0] if out.dim() == 3 else 1
        pages = max(1, math.ceil(channels / CHANNELS_PER_PAGE))
        if not 0 <= page < pages:
            raise NotFoundError(f"page {page} is out of range: 0 to {pages - 1}.")
        first = page * CHANNELS_PER_PAGE
        cells = []
        for c in range(first, min(channels, first + CHANNELS_PER_PAGE)):
            m = out[c] if out.dim() == 3 else out
            cells.append({"channel": c, "min": float(m.min()), "max": float(m.max())})
        return {
            "index": layer,
            "name": row.name,
            "type": row.type,
            "shape": list(out.shape),
            "channels": channels,
            "page": page,
            "pages": pages,
            "scale": {
                "min": lo,
                "max": hi,
                "colormap": "RdBu_r" if lo < 0 else "viridis",
                "text": (
                    f"one scale for the layer: blue {lo:.4g} … white 0 … red {hi:.4g}"
                    if lo < 0
                    else f"one scale for the layer: dark 0 … yellow {hi:.4g}"
                ),
            },
            "cells": cells,
        }

    def top_channels(self, acts: Activations, layer: int, count: int = 4) -> list[int]:
        out = self._output(acts, layer)
        if out.dim() != 3:
            return []
        return out.flatten(1).mean(dim=1).topk(min(count, out.shape[0])).indices.tolist()

    def channel_png(self, model_key: str, image_key: str, layer: int, channel: int) -> bytes:
        """One channel's map as a PNG in the layer's colour scale (a vector layer: one row)."""
        self._row(self.model(model_key), layer)
        acts = self.activations(model_key, image_key)
        out = self._output(acts, layer)
        if out.dim() == 3:
            if not 0 <= channel < out.shape[0]:
                raise NotFoundError(f"channel {channel} is out of range: 0 to {out.shape[0] - 1}.")
            m = out[channel]
        else:
            m = out.reshape(1, -1)
        lo, hi = self.scale(acts, layer)
        return colour_png(m.numpy(), lo, hi)

    def input_channel_png(self, model_key: str, image_key: str, layer: int, channel: int) -> bytes:
        """One channel of the tensor a layer reads (its input, e.g. the previous layer's
        output or the image), in one scale for that tensor, as for :meth:`channel_png`."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        acts = self.activations(model_key, image_key)
        inp = acts.inputs[layer]
        if inp is None or inp.dim() != 4:
            raise NotFoundError(f"{row.name}'s input is not kept as maps (only conv and pooling).")
        if not 0 <= channel < inp.shape[1]:
            raise NotFoundError(
                f"input channel {channel} is out of range: 0 to {inp.shape[1] - 1}."
            )
        lo, hi = float(inp.min()), float(inp.max())
        if lo < 0:
            lo, hi = -max(-lo, hi, 1e-12), max(-lo, hi, 1e-12)
        else:
            lo, hi = 0.0, max(hi, 1e-12)
        return colour_png(inp[0, channel].numpy(), lo, hi)

    def neuron(
        self, model_key: str, image_key: str, layer: int, channel: int, y: int = 0, x: int = 0
    ) -> dict[str, Any]:
        """The computation of one output value, written out with the real numbers."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        acts = self.activations(model_key, image_key)
        out = self._output(acts, layer)
        if out.dim() == 3:
            c_, h_, w_ = out.shape
            if not (0 <= channel < c_ and 0 <= y < h_ and 0 <= x < w_):
                raise NotFoundError(
                    f"({channel}, {y}, {x}) is outside {row.name}'s output {c_}×{h_}×{w_}."
                )
            value = float(out[channel, y, x])
        else:
            if not 0 <= channel < out.numel():
                raise NotFoundError(f"unit {channel} is outside {row.name}'s {out.numel()}.")
            value = float(out.reshape(-1)[channel])
        module = entry.model.get_submodule(row.name)
        inp = acts.inputs[layer]
        detail: dict[str, Any] = {
            "index": layer, "name": row.name, "type": row.type, "channel": channel, "y": y,
            "x": x, "value": value, "kind": "other",
        }  # fmt: skip
        if isinstance(module, nn.Conv2d) and inp is not None:
            detail.update(conv_detail(module, inp[0], channel, y, x))
        elif isinstance(module, POOLS) and inp is not None:
            detail.update(pool_detail(module, inp[0], channel, y, x))
        elif isinstance(module, nn.Linear) and inp is not None:
            detail.update(linear_detail(module, inp[0].reshape(-1), channel))
        elif isinstance(module, nn.BatchNorm2d) and inp is not None:
            detail.update(bn_detail(module, float(inp[0, channel, y, x]), channel))
        detail["following"] = self._following(entry, acts, layer, channel, y, x, out.dim())
        return detail

    def receptive_field(
        self, model_key: str, image_key: str, layer: int, channel: int, y: int, x: int
    ) -> dict[str, Any]:
        """The box of input pixels the value at ``(channel, y, x)`` depends on (an answer of
        its own: it runs the model up to the layer and back, the neuron's answer does not)."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        acts = self.activations(model_key, image_key)
        out = self._output(acts, layer)
        if out.dim() != 3 or not (
            0 <= channel < out.shape[0] and 0 <= y < out.shape[1] and 0 <= x < out.shape[2]
        ):
            raise NotFoundError(f"{row.name} has no map position ({channel}, {y}, {x}).")
        with self.lock:
            return self._receptive_field(entry, acts, layer, channel, y, x)

    def _following(
        self, entry: ModelEntry, acts: Activations, layer: int, c: int, y: int, x: int, dim: int
    ) -> list[dict[str, Any]]:
        """The elementwise layers right after this one (batch norm, the activation) at the
        same position: "before and after the activation"."""
        shape = entry.rows[layer].output_shape
        steps = []
        for i in range(layer + 1, len(entry.rows)):
            row = entry.rows[i]
            module = entry.model.get_submodule(row.name)
            out = acts.outputs[i]
            if not isinstance(module, ELEMENTWISE) or row.output_shape != shape or out is None:
                break
            v = out[0, c, y, x] if dim == 3 else out[0].reshape(-1)[c]
            steps.append({"index": i, "name": row.name, "type": row.type, "value": float(v)})
        return steps

    def _receptive_field(
        self, entry: ModelEntry, acts: Activations, layer: int, c: int, y: int, x: int
    ) -> dict[str, Any]:
        """The input pixels this value depends on: where the gradient of the value with
        respect to the input is not zero, found by a forward pass stopped at the layer. ReLUs
        that are off hide their paths, so this is the field that matters for this image."""
        from cnnzoo.visualize.maps import untouched

        model = entry.model
        target = model.get_submodule(entry.rows[layer].name)
        calls = sum(1 for r in entry.rows[:layer] if r.name == entry.rows[layer].name)
        seen = [0]
        kept: list[torch.Tensor] = []

        class _Stop(Exception):
            pass

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if seen[0] == calls:
                out = _first_tensor(output)
                assert out is not None
                kept.append(out)
                raise _Stop
            seen[0] += 1

        xin = acts.x.clone().requires_grad_(True)
        handle = target.register_forward_hook(hook)
        try:
            with untouched(model), torch.enable_grad():
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                with contextlib.suppress(_Stop):
                    model(xin * 1)  # not the leaf itself: an in-place first layer may follow
                if kept:
                    kept[0][0, c, y, x].backward()
        finally:
            handle.remove()
        row = entry.rows[layer]
        theory = list(row.rf_size) if row.rf_size else None
        grad = xin.grad
        if grad is None or not bool((grad != 0).any()):
            note = "no input pixel changes this value (every path to it is off)"
            return {"box": None, "theoretical_size": theory, "note": note}
        nz = (grad[0] != 0).any(dim=0).nonzero()
        top, left = nz.min(dim=0).values.tolist()
        bottom, right = nz.max(dim=0).values.tolist()
        return {"box": [top, left, bottom + 1, right + 1], "theoretical_size": theory}

    def topk(self, model_key: str, image_key: str, k: int = 5) -> dict[str, Any]:
        """The k most probable classes, with the softmax written out."""
        entry = self.model(model_key)
        acts = self.activations(model_key, image_key)
        logits = acts.logits[0].double()
        shift = float(logits.max())
        exps = (logits - shift).exp()
        total = float(exps.sum())
        probs = exps / total
        k = max(1, min(int(k), logits.numel()))
        names = class_names(entry.model, logits.numel())
        top = probs.topk(k).indices.tolist()
        return {
            "formula": "p_i = exp(z_i − max z) / Σ_j exp(z_j − max z)",
            "max_logit": shift,
            "sum_exp": total,
            "classes": [
                {
                    "class": i,
                    "name": names[i],
                    "logit": float(logits[i]),
                    "exp": float(exps[i]),
                    "probability": float(probs[i]),
                }
                for i in top
            ],
        }

    def input_png(self, model_key: str, image_key: str) -> bytes:
        """The image as the model sees it (normalisation undone for showing)."""
        from cnnzoo.visualize.draw import display_image

        entry = self.model(model_key)
        acts = self.activations(model_key, image_key)
        pre = preprocessing_of(entry.model)
        picture = display_image(acts.x[0], pre.mean, pre.std).numpy()
        return _png((picture * 255).round().astype(np.uint8))

    def cam_png(self, model_key: str, image_key: str, target: int | None) -> bytes:
        """Grad-CAM for ``target`` (the top class when ``None``) over the image."""
        from cnnzoo.visualize import class_activation_map, default_cam_layer
        from cnnzoo.visualize.draw import display_image

        entry = self.model(model_key)
        acts = self.activations(model_key, image_key)
        n = acts.logits.shape[1]
        if target is not None and not 0 <= target < n:
            raise NotFoundError(f"class {target} is out of range: 0 to {n - 1}.")
        with self.lock:
            layer = default_cam_layer(entry.model, tuple(acts.x.shape[1:]))
            cam = class_activation_map(entry.model, acts.x, target, layer=layer)[0].numpy()
        pre = preprocessing_of(entry.model)
        picture = display_image(acts.x[0], pre.mean, pre.std).numpy()
        if picture.ndim == 2:
            picture = np.repeat(picture[..., None], 3, axis=2)
        import matplotlib

        heat = matplotlib.colormaps["jet"](cam)[..., :3]
        blend = 0.55 * picture + 0.45 * heat
        return _png((blend.clip(0, 1) * 255).round().astype(np.uint8))

    def filters_png(self, model_key: str) -> bytes:
        from cnnzoo.visualize import filter_layer, filters
        from cnnzoo.visualize.draw import draw_filters

        entry = self.model(model_key)
        with self.lock:
            return draw_filters(filters(entry.model), filter_layer(entry.model))

    def preprocessing(self, model_key: str) -> str:
        pre = preprocessing_of(self.model(model_key).model)
        return str(pre.describe_steps())


# --- worked computations -----------------------------------------------------------------------


def conv_detail(conv: nn.Conv2d, inp: torch.Tensor, k: int, y: int, x: int) -> dict[str, Any]:
    """Output ``(k, y, x)`` of ``conv`` on ``inp`` (C, H, W), worked in float64: each input
    channel's window (zero padding as 0), its kernel, their products' sum, then the bias."""
    padding: tuple[int, int] | None
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        padding = _same_padding(conv) if conv.padding == "same" else None
        if padding is None or conv.padding_mode != "zeros":
            return {"kind": "conv", "note": f"padding {conv.padding!r}/{conv.padding_mode} "
                    "is not worked out"}  # fmt: skip
    else:
        padding = (int(conv.padding[0]), int(conv.padding[1]))
    sh, sw = conv.stride
    dh, dw = conv.dilation
    kh, kw = conv.kernel_size
    per_group_out = conv.out_channels // conv.groups
    cin = conv.in_channels // conv.groups
    first = (k // per_group_out) * cin
    rows = [y * sh - padding[0] + i * dh for i in range(kh)]
    cols = [x * sw - padding[1] + j * dw for j in range(kw)]
    weight = conv.weight[k].detach().double()  # (cin, kh, kw)
    ph, pw = padding
    padded = torch.nn.functional.pad(inp[first : first + cin].double(), (pw, pw, ph, ph))
    windows = padded[:, [r + ph for r in rows]][:, :, [c + pw for c in cols]]  # (cin, kh, kw)
    sums = (windows * weight).flatten(1).sum(dim=1).tolist()
    channels = [(ci, windows[ci], weight[ci], sums[ci]) for ci in range(cin)]
    total = sum(s for *_, s in channels)
    bias = float(conv.bias[k].detach()) if conv.bias is not None else 0.0
    shown = sorted(channels, key=lambda t: -abs(t[3]))[:TOP_CONTRIBUTIONS]
    return {
        "kind": "conv",
        "stride": [sh, sw], "padding": list(padding), "dilation": [dh, dw],
        "groups": conv.groups, "in_channels": cin, "first_input_channel": first,
        "input_size": list(inp.shape[1:]), "kernel_size": [kh, kw],
        "rows": rows, "cols": cols,
        "formula": "Σ_c Σ_i Σ_j window[c, i, j] · kernel[c, i, j] + bias",
        "channels": [
            {"channel": first + ci, "window": win.tolist(), "kernel": ker.tolist(), "sum": s}
            for ci, win, ker, s in shown
        ],
        "channels_shown": len(shown),
        "channel_sums": {str(first + ci): s for ci, _, _, s in channels},
        "sum": total, "bias": bias, "computed": total + bias,
    }  # fmt: skip


def _same_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    pads = []
    for k, d in zip(conv.kernel_size, conv.dilation, strict=True):
        total = d * (k - 1)
        if total % 2:
            return None  # torch pads asymmetrically here
        pads.append(total // 2)
    return pads[0], pads[1]


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def pool_detail(pool: nn.Module, inp: torch.Tensor, c: int, y: int, x: int) -> dict[str, Any]:
    """Output ``(c, y, x)`` of a pooling layer: its window and what it keeps."""
    _, h, w = inp.shape
    src = inp[c].double()
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(pool.output_size)
        oh, ow = oh or h, ow or w
        rows = list(range((y * h) // oh, -(-((y + 1) * h) // oh)))
        cols = list(range((x * w) // ow, -(-((x + 1) * w) // ow)))
        region = src[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return {"kind": "pool", "pool": "avg", "rows": rows, "cols": cols,
                "window": region.tolist(), "computed": float(region.mean())}  # fmt: skip
    assert isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d))
    kh, kw = _pair(pool.kernel_size)
    sh, sw = _pair(pool.stride or pool.kernel_size)
    ph, pw = _pair(pool.padding)
    dh, dw = _pair(getattr(pool, "dilation", 1))
    rows = [y * sh - ph + i * dh for i in range(kh)]
    cols = [x * sw - pw + j * dw for j in range(kw)]
    inside = [[0 <= r < h and 0 <= cc < w for cc in cols] for r in rows]
    fill = -math.inf if isinstance(pool, nn.MaxPool2d) else 0.0
    window = [
        [float(src[r, cc]) if ok else fill for cc, ok in zip(cols, line, strict=True)]
        for r, line in zip(rows, inside, strict=True)
    ]
    detail: dict[str, Any] = {"kind": "pool", "rows": rows, "cols": cols, "input_size": [h, w],
                              "stride": [sh, sw], "padding": [ph, pw], "dilation": [dh, dw],
                              "kernel_size": [kh, kw]}  # fmt: skip
    if isinstance(pool, nn.MaxPool2d):
        flat = [v for line in window for v in line]
        best = max(flat)
        detail.update(pool="max", kept=list(divmod(flat.index(best), kw)), computed=best)
        detail["window"] = [[None if v == -math.inf else v for v in line] for line in window]
    else:
        vals = [v for line, ok_line in zip(window, inside, strict=True)
                for v, ok in zip(line, ok_line, strict=True) if ok]  # fmt: skip
        count = kh * kw if pool.count_include_pad else len(vals)
        if pool.divisor_override:
            count = pool.divisor_override
        detail.update(pool="avg", divisor=count, computed=sum(vals) / count)
    detail.setdefault("window", window)
    return detail


def linear_detail(linear: nn.Linear, inp: torch.Tensor, k: int) -> dict[str, Any]:
    """Output ``k`` of a linear layer: Σ x_i · w_ki + b, its largest contributions listed."""
    x = inp.double()
    wk = linear.weight[k].detach().double()
    products = x * wk
    bias = float(linear.bias[k].detach()) if linear.bias is not None else 0.0
    total = float(products.sum())
    top = products.abs().topk(min(TOP_CONTRIBUTIONS, products.numel())).indices.tolist()
    return {
        "kind": "linear",
        "formula": "Σ_i x_i · w_i + bias",
        "inputs": products.numel(),
        "contributions": [
            {"input": i, "x": float(x[i]), "w": float(wk[i]), "product": float(products[i])}
            for i in top
        ],
        "sum": total, "bias": bias, "computed": total + bias,
    }  # fmt: skip


def bn_detail(bn: nn.BatchNorm2d, v: float, c: int) -> dict[str, Any]:
    assert bn.running_mean is not None and bn.running_var is not None
    mean, var = float(bn.running_mean[c]), float(bn.running_var[c])
    gamma = float(bn.weight[c].detach()) if bn.weight is not None else 1.0
    beta = float(bn.bias[c].detach()) if bn.bias is not None else 0.0
    return {
        "kind": "batchnorm", "formula": "(x − mean) / √(var + eps) · γ + β",
        "input": v, "mean": mean, "var": var, "eps": bn.eps, "gamma": gamma, "beta": beta,
        "computed": (v - mean) / math.sqrt(var + bn.eps) * gamma + beta,
    }  # fmt: skip


def class_names(model: nn.Module, n: int) -> list[str]:
    pre = getattr(model, "pretrained_cfg", None)
    names = getattr(pre, "class_names", None)
    if names and len(names) == n:
        return [str(s) for s in names]
    return [f"class {i}" for i in range(n)]


def colour_png(m: np.ndarray, lo: float, hi: float) -> bytes:
    """A 2-D map in a fixed scale: diverging blue-white-red around 0 when ``lo < 0``, else
    viridis from 0."""
    import matplotlib

    t = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    cmap = matplotlib.colormaps["RdBu_r" if lo < 0 else "viridis"]
    rgb = cmap(np.clip(t, 0, 1))[..., :3]
    return _png((rgb * 255).round().astype(np.uint8))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def with_input_size(model: nn.Module, side: int) -> nn.Module:
    """Prepare images at ``side`` px for this model (a smaller input for a quick look)."""
    pre = preprocessing_of(model)
    chans = pre.input_size[0]
    new = replace(pre, input_size=(chans, side, side), resize=None, crop=None)
    model.pretrained_cfg = new  # type: ignore[assignment]  # torch types attributes as modules
    return model
