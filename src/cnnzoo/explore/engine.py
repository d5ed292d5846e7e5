"""What ``cnnzoo explore`` computes, kept apart from HTTP: the models and images of a session,
the activations of every layer for a (model, image) pair in a byte-bounded LRU cache, and the
answers of the JSON API (graph, layer maps, a neuron's computation, top-k, CAM, filters).

Layers are the analyzer's rows (:func:`cnnzoo.analysis.summarize`): one row per call of a leaf
module, in execution order, addressed by its index (a module called twice, such as a ResNet
block's shared ReLU, has two rows). When a pair's activations fit the cache, every call's output
is kept, and the input of every layer whose neuron can be worked out (convolution, pooling,
linear, batch norm). When they do not, the first pass keeps only what the overview needs (each
layer's colour scale, top channels and their maps) and a click computes the layers it needs by
a pass that keeps only them (:meth:`Explorer.activations`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnzoo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

T = TypeVar("T")
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
    kept_bytes: int = 0  # what a complete pass keeps for one image (float32)
    shortcuts: list[dict[str, Any]] | None = None  # found by the first pass (_ShortcutWatcher)


@dataclass
class ImageEntry:
    key: str
    name: str
    image: Image.Image  # decoded, as uploaded; each model prepares it its own way


@dataclass
class Activations:
    """One forward pass of one image: logits, each row's colour scale and top channels, and
    (``complete``) every row's output and the kept inputs, or (not ``complete``: the pair does
    not fit the cache) only the maps of each row's top channels, in ``thumbs``."""

    x: torch.Tensor  # (1, C, H, W), as the model sees the image
    logits: torch.Tensor  # (1, K)
    outputs: list[torch.Tensor | None]
    inputs: list[torch.Tensor | None]
    nbytes: int
    scales: dict[int, tuple[float, float]] = field(default_factory=dict)
    tops: dict[int, list[int]] = field(default_factory=dict)
    complete: bool = True
    thumbs: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)


@dataclass
class Kept:
    """One tensor of one row, computed on demand for a pair that does not fit the cache."""

    tensor: torch.Tensor  # (1, ...) as the layer gave or read it, float32
    nbytes: int


class _Stop(Exception):
    """Ends a forward pass early, once the last wanted layer has run."""


_ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})


class _ShortcutWatcher(TorchFunctionMode):
    """Finds the residual additions a forward writes as ``x + y`` (no module of their own, so
    no analyzer row): each sum of two same-shaped maps, and the module whose forward did it
    (a stack kept by hooks on every module). A ``pad`` in that forward marks ResNet's option-A
    shortcut (strided identity, extra channels zero-padded). Per thread, like every
    ``TorchFunctionMode``: another thread's model is not watched."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stack: list[str] = []
        self.adds: dict[str, int] = {}
        self.pads: set[str] = set()
        self.handles: list[Any] = []

    def __enter__(self) -> _ShortcutWatcher:
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._push(name)))
            self.handles.append(module.register_forward_hook(self._pop))
        return cast("_ShortcutWatcher", super().__enter__())

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        super().__exit__(*exc)

    def _push(self, name: str) -> Any:
        return lambda module, args: self.stack.append(name)

    def _pop(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.stack and name in _ADDS and len(args) >= 2:
            a, b = args[0], args[1]
            maps = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 4
            if maps and a.shape == b.shape:
                self.adds[self.stack[-1]] = self.adds.get(self.stack[-1], 0) + 1
        elif self.stack and name == "pad":
            self.pads.add(self.stack[-1])
        return func(*args, **(kwargs or {}))

    def shortcuts(self) -> list[dict[str, Any]]:
        """Each module whose forward adds two maps: ``unit``, whether a ``downsample`` or
        ``shortcut`` submodule makes the added path (drawn already), and option A's padding."""
        found = []
        for unit in self.adds:
            module = self.model.get_submodule(unit)
            if not list(module.children()):
                continue  # a layer's own arithmetic, not a connection between layers
            children = dict(module.named_children())
            found.append(
                {
                    "unit": unit,
                    "module": any(n in children for n in ("downsample", "shortcut")),
                    "padded": unit in self.pads,
                }
            )
        return found


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


def _scale_of(out: torch.Tensor) -> tuple[float, float]:
    """A layer's one colour scale: symmetric around 0 when it has negative values."""
    lo, hi = float(out.min()), float(out.max())
    if lo < 0:
        peak = max(-lo, hi, 1e-12)
        return (-peak, peak)
    return (0.0, max(hi, 1e-12))


def _tops_of(out: torch.Tensor, count: int = 4) -> list[int]:
    """The channels with the largest mean of a (1, C, H, W) map; none for other shapes."""
    if out.dim() != 4:
        return []
    return out[0].flatten(1).mean(dim=1).topk(min(count, out.shape[1])).indices.tolist()


def _box(grad: torch.Tensor | None) -> list[int] | None:
    """[top, left, bottom, right) of the non-zero cells of a (1, C, H, W) gradient."""
    if grad is None or not bool((grad != 0).any()):
        return None
    nz = (grad[0] != 0).any(dim=0).nonzero()
    top, left = nz.min(dim=0).values.tolist()
    bottom, right = nz.max(dim=0).values.tolist()
    return [top, left, bottom + 1, right + 1]


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


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Holds the session's lock for a whole answer, not only while torch runs: a request
    waiting for the lock holds no activations, so memory is the cache's bound plus the one
    answer being made, however many requests wait (50 concurrent ones would otherwise each
    hold a pass the cache has already let go)."""

    @functools.wraps(method)
    def locked(self: Explorer, *args: Any, **kwargs: Any) -> T:
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


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
        # (model, image): the pass; (model, image, "out" | "in", row): a tensor kept on demand.
        self.cache: OrderedDict[tuple[Any, ...], Activations | Kept] = OrderedDict()
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
        entry.kept_bytes = (
            4 * math.prod(pre.input_size)
            + sum(4 * math.prod(row.output_shape) if row.output_shape else 0 for row in entry.rows)
            + sum(
                4 * math.prod(row.input_shape)
                for row in entry.rows
                if row.input_shape and isinstance(entry.model.get_submodule(row.name), KEEP_INPUT)
            )
        )

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

    def cached_bytes(self) -> int:
        """What the cache holds now (never more than ``cache_bytes``)."""
        return sum(v.nbytes for v in self.cache.values())

    def _make_room(self, nbytes: int, spare: Any = None) -> None:
        # Before a pass, not after: the cache and the new pass never hold more than the bound.
        while self.cached_bytes() + nbytes > self.cache_bytes and self._evict(spare):
            pass

    def _evict(self, spare: Any = None) -> bool:
        """Drop the least recently used layer kept on demand, else the least recently used
        pass, never ``spare``: a pair's overview part serves every click on it, a layer only
        its own. False when nothing but ``spare`` is left."""
        layers = [k for k, v in self.cache.items() if isinstance(v, Kept) and k != spare]
        others = layers or [k for k in self.cache if k != spare]
        if not others:
            return False
        del self.cache[others[0]]
        return True

    def _keep(self, key: tuple[Any, ...], value: Activations | Kept) -> bool:
        """Keep ``value`` (least recently used first out) if it fits the bound at all."""
        if value.nbytes > self.cache_bytes:
            return False
        self.cache[key] = value
        self.cache.move_to_end(key)
        while self.cached_bytes() > self.cache_bytes and self._evict(spare=key):
            pass  # never ``key`` itself: it fits alone
        return True

    def activations(self, model_key: str, image_key: str) -> Activations:
        """This image's pass through the model, from the cache or one forward pass.

        When the pair's activations (every row's output, the inputs of the rows worked out)
        fit ``cache_bytes``, the pass keeps them all and a click answers from memory. When they
        do not, the pass keeps what the overview needs only (each row's colour scale, its top
        channels and their maps, the logits): a click on a layer then runs the model again up
        to that layer, keeping only what it needs (:meth:`_tensors`). The cache holds at most
        ``cache_bytes``; the least recently used entries leave first.
        """
        entry, image = self.model(model_key), self.image(image_key)
        with self.lock:
            key = (model_key, image_key)
            if key in self.cache:
                self.cache.move_to_end(key)
                return cast(Activations, self.cache[key])
            complete = entry.kept_bytes <= self.cache_bytes
            if complete:
                self._make_room(entry.kept_bytes)
            acts = self._forward(entry, image, keep=complete)
            if self._keep(key, acts) or complete:
                if complete and key not in self.cache:  # the estimate was short
                    entry.kept_bytes = acts.nbytes  # layer by layer from the next image on
                what = (
                    "the overview keeps each layer's colour scale and top channels, and a "
                    "click on a layer runs the model again up to that layer, keeping only it"
                )
            else:
                what = "even the overview's maps do not fit: each request runs the model again"
            if entry.kept_bytes > self.cache_bytes:
                self._note(
                    entry,
                    f"{entry.label}'s activations ({_size(entry.kept_bytes)}) do not fit the "
                    f"{_size(self.cache_bytes)} cache: {what}",
                )
            return acts

    def _note(self, entry: ModelEntry, text: str) -> None:
        if not any(n.startswith(entry.label) and "do not fit" in n for n in self.notes):
            self.notes.append(text)

    def prepared(self, entry: ModelEntry, image: ImageEntry) -> torch.Tensor:
        pre = preprocessing_of(entry.model)
        return pre.transform()(image.image).unsqueeze(0)  # (1, C, H, W)

    def _forward(self, entry: ModelEntry, image: ImageEntry, keep: bool = True) -> Activations:
        """One pass: each row's scale and top channels, and (``keep``) every row's output and
        the inputs of :data:`KEEP_INPUT` rows, or (not ``keep``) the top channels' maps only."""
        from cnnzoo.visualize.maps import untouched

        model = entry.model
        x = self.prepared(entry, image)
        outputs: list[torch.Tensor | None] = []
        inputs: list[torch.Tensor | None] = []
        acts = Activations(x, x, outputs, inputs, 0, complete=keep)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            i = len(outputs)
            out = _first_tensor(output)
            if out is not None:  # now, before an in-place activation after it changes it
                out = out.detach().float()
                acts.scales[i] = _scale_of(out)
                acts.tops[i] = _tops_of(out)
                if not keep:
                    for c in acts.tops[i]:
                        acts.thumbs[(i, c)] = out[0, c].clone()  # (H, W)
            # Copies: an in-place activation after this layer would change the tensor.
            outputs.append(None if out is None or not keep else out.clone())
            arg = _first_tensor(args) if keep and isinstance(module, KEEP_INPUT) else None
            inputs.append(None if arg is None else arg.detach().float().clone())

        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        watch = _ShortcutWatcher(model) if entry.shortcuts is None else None
        try:
            with untouched(model), torch.no_grad(), watch or contextlib.nullcontext():
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
        if watch is not None:
            entry.shortcuts = watch.shortcuts()
        acts.logits = logits.detach().float()
        acts.nbytes = _tensor_bytes([*outputs, *inputs, x, acts.logits, *acts.thumbs.values()])
        return acts

    def _tensors(
        self,
        model_key: str,
        image_key: str,
        outs: list[int] | tuple[int, ...] = (),
        ins: list[int] | tuple[int, ...] = (),
    ) -> dict[tuple[str, int], torch.Tensor | None]:
        """Rows' outputs (``("out", i)``) and inputs (``("in", i)``), each ``(1, ...)``: from the
        complete pass when the pair fits the cache, else from the cache or one pass that keeps
        only these (stopped after the last of them), each then kept in the cache."""
        entry, image = self.model(model_key), self.image(image_key)
        with self.lock:
            acts = self.activations(model_key, image_key)
            found: dict[tuple[str, int], torch.Tensor | None] = {}
            missing: list[tuple[str, int]] = []
            for kind, rows in (("out", outs), ("in", ins)):
                for i in rows:
                    held = (acts.outputs if kind == "out" else acts.inputs)[i]
                    item = self.cache.get((model_key, image_key, kind, i))
                    if held is not None or (kind == "out" and acts.complete):
                        found[(kind, i)] = held  # None: the layer gives no tensor
                    elif item is not None:
                        self.cache.move_to_end((model_key, image_key, kind, i))
                        found[(kind, i)] = cast(Kept, item).tensor
                    else:
                        missing.append((kind, i))
            if missing:
                shapes = [
                    entry.rows[i].output_shape if kind == "out" else entry.rows[i].input_shape
                    for kind, i in missing
                ]
                need = sum(4 * math.prod(s) for s in shapes if s)
                self._make_room(need, spare=(model_key, image_key))
                got = self._pass(entry, image, missing)
                for kind, i in missing:
                    tensor = got.get((kind, i))
                    found[(kind, i)] = tensor
                    if tensor is not None:
                        kept = Kept(tensor, tensor.numel() * tensor.element_size())
                        self._keep((model_key, image_key, kind, i), kept)
            return found

    def _pass(
        self, entry: ModelEntry, image: ImageEntry, wanted: list[tuple[str, int]]
    ) -> dict[tuple[str, int], torch.Tensor]:
        """A forward pass that keeps only the ``wanted`` rows' outputs and inputs, stopped once
        the last of them has run: memory is the pass's own plus what it keeps."""
        from cnnzoo.visualize.maps import untouched

        model = entry.model
        want_out = {i for kind, i in wanted if kind == "out"}
        want_in = {i for kind, i in wanted if kind == "in"}
        last = max(i for _, i in wanted)
        got: dict[tuple[str, int], torch.Tensor] = {}
        calls = [0, 0]  # leaf calls never nest: the i-th pre-hook and the i-th hook are row i

        def pre(module: nn.Module, args: tuple) -> None:
            i, calls[0] = calls[0], calls[0] + 1
            arg = _first_tensor(args) if i in want_in else None
            if arg is not None:  # before the call: an in-place layer overwrites its input
                got[("in", i)] = arg.detach().float().clone()

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            i, calls[1] = calls[1], calls[1] + 1
            out = _first_tensor(output) if i in want_out else None
            if out is not None:
                got[("out", i)] = out.detach().float().clone()
            if i == last:
                raise _Stop

        leaves = [m for m in model.modules() if not list(m.children())]
        handles = [m.register_forward_pre_hook(pre) for m in leaves]
        handles += [m.register_forward_hook(hook) for m in leaves]
        x = self.prepared(entry, image)
        try:
            with untouched(model), torch.no_grad(), contextlib.suppress(_Stop):
                model.eval()
                model(x)
        finally:
            for h in handles:
                h.remove()
        return got

    # --- answers ----------------------------------------------------------------------------

    @_locked
    def graph(self, model_key: str, image_key: str | None = None) -> dict[str, Any]:
        """The analyzer's rows grouped by block, in execution order; with an image, each
        layer's most active channels (``top_channels``) and the residual additions the pass
        saw (``shortcuts``: the units whose forward adds two maps, ``module`` when a
        ``downsample``/``shortcut`` layer makes the added path)."""
        entry = self.model(model_key)
        acts = self.activations(model_key, image_key) if image_key else None
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
            if acts is not None:
                blocks[-1]["layers"][-1]["top_channels"] = self.top_channels(acts, i)
        return {
            "model": entry.key,
            "label": entry.label,
            "note": entry.note,
            "input_size": list(pre.input_size),
            "params": entry.summary.params,
            "macs": entry.summary.macs,
            "blocks": blocks,
            "layers": len(entry.rows),
            "shortcuts": entry.shortcuts or [],
        }

    def _row(self, entry: ModelEntry, layer: int) -> Any:
        if not 0 <= layer < len(entry.rows):
            raise NotFoundError(
                f"layer {layer} is out of range: {entry.label} has layers 0 to "
                f"{len(entry.rows) - 1}."
            )
        return entry.rows[layer]

    def _out(self, model_key: str, image_key: str, layer: int) -> torch.Tensor:
        out = self._tensors(model_key, image_key, outs=[layer])[("out", layer)]
        if out is None:
            raise NotFoundError(f"layer {layer} gives no tensor.")
        return out[0]  # (C, H, W) or (F,)

    def scale(self, acts: Activations, layer: int) -> tuple[float, float]:
        """The layer's one colour scale: symmetric around 0 when it has negative values."""
        if layer not in acts.scales:
            raise NotFoundError(f"layer {layer} gives no tensor.")
        return acts.scales[layer]

    @_locked
    def layer(self, model_key: str, image_key: str, layer: int, page: int = 0) -> dict[str, Any]:
        """A layer's channels (one page of them) with their ranges and the layer's scale."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        acts = self.activations(model_key, image_key)
        lo, hi = self.scale(acts, layer)
        # What a click on one of its neurons reads too (its input, the activation after it):
        # for a pair over the cache, one pass now instead of a second one at that click.
        module = entry.model.get_submodule(row.name)
        ins = [layer] if isinstance(module, KEEP_INPUT) else []
        outs = [layer, *self._following(entry, layer)]
        out = self._tensors(model_key, image_key, outs=outs, ins=ins)[("out", layer)]
        if out is None:
            raise NotFoundError(f"layer {layer} gives no tensor.")
        out = out[0]  # (C, H, W) or (F,)
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
        """The layer's channels with the largest mean (found by the pass), for thumbnails."""
        return acts.tops.get(layer, [])[:count]

    @_locked
    def channel_png(self, model_key: str, image_key: str, layer: int, channel: int) -> bytes:
        """One channel's map as a PNG in the layer's colour scale (a vector layer: one row)."""
        self._row(self.model(model_key), layer)
        acts = self.activations(model_key, image_key)
        lo, hi = self.scale(acts, layer)
        thumb = acts.thumbs.get((layer, channel))
        if thumb is not None:  # a thumbnail of the overview, kept by the pass
            return colour_png(thumb.numpy(), lo, hi)
        out = self._out(model_key, image_key, layer)
        if out.dim() == 3:
            if not 0 <= channel < out.shape[0]:
                raise NotFoundError(f"channel {channel} is out of range: 0 to {out.shape[0] - 1}.")
            m = out[channel]
        else:
            m = out.reshape(1, -1)
        return colour_png(m.numpy(), lo, hi)

    @_locked
    def input_channel_png(self, model_key: str, image_key: str, layer: int, channel: int) -> bytes:
        """One channel of the tensor a layer reads (its input, e.g. the previous layer's
        output or the image), in one scale for that tensor, as for :meth:`channel_png`."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        if not row.input_shape or len(row.input_shape) != 4:
            raise NotFoundError(f"{row.name} reads no maps (its input is not (N, C, H, W)).")
        inp = self._tensors(model_key, image_key, ins=[layer])[("in", layer)]
        if inp is None or inp.dim() != 4:
            raise NotFoundError(f"{row.name} reads no maps (its input is not (N, C, H, W)).")
        if not 0 <= channel < inp.shape[1]:
            raise NotFoundError(
                f"input channel {channel} is out of range: 0 to {inp.shape[1] - 1}."
            )
        lo, hi = _scale_of(inp)
        return colour_png(inp[0, channel].numpy(), lo, hi)

    @_locked
    def neuron(
        self, model_key: str, image_key: str, layer: int, channel: int, y: int = 0, x: int = 0
    ) -> dict[str, Any]:
        """The computation of one output value, written out with the real numbers."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        module = entry.model.get_submodule(row.name)
        following = self._following(entry, layer)
        wanted_in = [layer] if isinstance(module, KEEP_INPUT) else []
        got = self._tensors(model_key, image_key, outs=[layer, *following], ins=wanted_in)
        out = got[("out", layer)]
        if out is None:
            raise NotFoundError(f"layer {layer} gives no tensor.")
        out = out[0]
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
        inp = got.get(("in", layer))
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
        steps = []
        for i in following:  # "before and after the activation"
            after = got[("out", i)]
            if after is None:
                break
            v = after[0, channel, y, x] if out.dim() == 3 else after[0].reshape(-1)[channel]
            r = entry.rows[i]
            steps.append({"index": i, "name": r.name, "type": r.type, "value": float(v)})
        detail["following"] = steps
        return detail

    @_locked
    def receptive_field(
        self, model_key: str, image_key: str, layer: int, channel: int, y: int, x: int
    ) -> dict[str, Any]:
        """The box of input pixels the value at ``(channel, y, x)`` depends on, and the box of
        the layer's input map (the previous layer's output) it reads (an answer of its own: it
        runs the model up to the layer and back, the neuron's answer does not)."""
        entry = self.model(model_key)
        row = self._row(entry, layer)
        shape = tuple(row.output_shape or ())[1:]
        if len(shape) != 3 or not (
            0 <= channel < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2]
        ):
            raise NotFoundError(f"{row.name} has no map position ({channel}, {y}, {x}).")
        acts = self.activations(model_key, image_key)
        inp = None
        if row.input_shape and len(row.input_shape) == 4:
            inp = self._tensors(model_key, image_key, ins=[layer])[("in", layer)]
        with self.lock:
            answer = self._receptive_field(entry, acts, layer, channel, y, x)
            answer.update(self._input_box(entry, layer, inp, channel, y, x))
        return answer

    def _following(self, entry: ModelEntry, layer: int) -> list[int]:
        """The elementwise rows right after this one (batch norm, the activation) with its
        output's shape: the same position's value "before and after the activation"."""
        shape = entry.rows[layer].output_shape
        steps = []
        for i in range(layer + 1, len(entry.rows)):
            row = entry.rows[i]
            module = entry.model.get_submodule(row.name)
            if not isinstance(module, ELEMENTWISE) or row.output_shape != shape:
                break
            steps.append(i)
        return steps

    def _input_box(
        self, entry: ModelEntry, layer: int, inp: torch.Tensor | None, c: int, y: int, x: int
    ) -> dict[str, Any]:
        """The box of the layer's input map that the value at ``(c, y, x)`` depends on: the
        non-zero gradient of the value with respect to the layer's input, found by the layer
        alone (its input is all it reads). For a convolution: its window, cut at the map's
        edges (padding reads no input)."""
        from cnnzoo.visualize.maps import untouched

        if inp is None or inp.dim() != 4:
            return {"input_box": None, "input_shape": None}
        module = entry.model.get_submodule(entry.rows[layer].name)
        z = torch.zeros_like(inp, requires_grad=True)
        with untouched(module), torch.enable_grad():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            try:
                out = _first_tensor(module(inp + z))  # new: an in-place layer may write it
            except Exception:  # a layer that reads more than this one tensor: no box, no error
                out = None
            if out is not None and out.requires_grad and out.dim() == 4:
                out[0, c, y, x].backward()
        return {"input_box": _box(z.grad), "input_shape": list(inp.shape)}

    def _receptive_field(
        self, entry: ModelEntry, acts: Activations, layer: int, c: int, y: int, x: int
    ) -> dict[str, Any]:
        """The input pixels this value depends on: where the gradient of the value with
        respect to the input is not zero, found by a forward pass stopped at the layer. ReLUs
        that are off hide their paths, so this is the field that matters for this image."""
        from cnnzoo.visualize.maps import untouched

        model = entry.model
        row = entry.rows[layer]
        theory = list(row.rf_size) if row.rf_size else None
        # The gradient pass holds about what the layers up to this one give (and as much
        # again saved for backward): above the cache bound it is not run.
        need = 2 * sum(
            4 * math.prod(r.output_shape) for r in entry.rows[: layer + 1] if r.output_shape
        )
        if need > self.cache_bytes:
            note = (
                f"the box on the input is not computed: the gradient pass up to {row.name} "
                f"would hold about {_size(need)}, over the {_size(self.cache_bytes)} cache"
            )
            return {"box": None, "theoretical_size": theory, "note": note}
        target = model.get_submodule(row.name)
        calls = sum(1 for r in entry.rows[:layer] if r.name == row.name)
        seen = [0]
        kept: list[torch.Tensor] = []

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
        box = _box(xin.grad)
        if box is None:
            note = "no input pixel changes this value (every path to it is off)"
            return {"box": None, "theoretical_size": theory, "note": note}
        return {"box": box, "theoretical_size": theory}

    @_locked
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

    @_locked
    def input_png(self, model_key: str, image_key: str) -> bytes:
        """The image as the model sees it (normalisation undone for showing)."""
        from cnnzoo.visualize.draw import display_image

        entry = self.model(model_key)
        acts = self.activations(model_key, image_key)
        pre = preprocessing_of(entry.model)
        picture = display_image(acts.x[0], pre.mean, pre.std).numpy()
        return _png((picture * 255).round().astype(np.uint8))

    @_locked
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

    @_locked
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
