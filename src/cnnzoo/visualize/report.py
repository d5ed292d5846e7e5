"""``cnnzoo visualize``: image files → filters, feature maps and class activation maps as
PNG files and one self-contained ``index.html`` (every picture inline as a data URI, nothing
from the network, every name escaped).

Layout of the output folder::

    DIR/index.html
    DIR/filters.png                 the first layer's filters (the same for every image)
    DIR/<image>/maps_<layer>.png    per image: the chosen layers' most active channels
    DIR/<image>/cam_<class>.png     per image: the map of each top-k class (or --class)
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnzoo.checks import check_int
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.fileio import atomic_write_bytes, atomic_write_text
from cnnzoo.visualize import draw
from cnnzoo.visualize.cam import CAM_METHODS, class_activation_map, default_cam_layer
from cnnzoo.visualize.maps import filter_layer, filters, resolve_layers, run_with_maps, stage_layers


@dataclass
class ImagePictures:
    """What was drawn for one image file."""

    path: str
    folder: Path
    top: list[tuple[int, str, float]]  # (class index, name, probability), the classes drawn
    maps: dict[str, Path] = field(default_factory=dict)
    cams: dict[int, Path] = field(default_factory=dict)


@dataclass
class VisualizeResult:
    """Everything written, for the command to report."""

    index: Path
    filters: Path
    images: list[ImagePictures]
    cam_layer: str | None
    notes: list[str] = field(default_factory=list)


def safe_name(text: str) -> str:
    """``text`` as part of a file name: letters, digits, ``.``, ``_``, ``-`` kept, others ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "_"


def _class_names(model: nn.Module, num_classes: int) -> list[str]:
    pre = getattr(model, "pretrained_cfg", None)
    names = getattr(pre, "class_names", None)
    if names and len(names) == num_classes:
        return list(names)
    return [f"class {i}" for i in range(num_classes)]


def visualize_files(
    model: nn.Module,
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    layers: Sequence[str] | None = None,
    cam: str = "gradcam",
    target: int | None = None,
    topk: int = 3,
) -> VisualizeResult:
    """Draw the filters, the feature maps of ``layers`` (default: the end of every stage) and
    the class activation maps of each image's ``topk`` classes (or of class ``target``).

    Images are read and prepared by ``model.pretrained_cfg`` (as ``cnnzoo predict`` does).
    Every input is checked before anything is drawn or written.

    Raises:
        InvalidArgumentError: an unknown layer or CAM method, ``topk`` below 1, a class index
            out of range, or a model without ``pretrained_cfg``.
        DataError: a file that is not a readable image.
    """
    from cnnzoo.predict import read_image

    check_int("--topk", topk)
    if cam not in CAM_METHODS:
        raise InvalidArgumentError(f"--cam {cam!r} is not one of {', '.join(CAM_METHODS)}.")
    pre = getattr(model, "pretrained_cfg", None)
    if pre is None:
        raise InvalidArgumentError(
            "the model has no pretrained_cfg: load it with cnnzoo.weights.load_weights."
        )
    stages = {path: label for label, path in stage_layers(model).items()}
    names = resolve_layers(model, layers if layers is not None else list(stages))
    num_classes = int(getattr(model, "num_classes", 0)) or None
    if target is not None and num_classes is not None and not 0 <= target < num_classes:
        raise InvalidArgumentError(
            f"--class {target} is out of range: the model has {num_classes} classes, "
            f"0 to {num_classes - 1}."
        )
    transform = pre.transform()
    batch = torch.stack([transform(read_image(p)) for p in paths])  # (N, C, H, W)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is a file; give a folder for the pictures.")
    logits, outputs = run_with_maps(model, batch, names)
    class_names = _class_names(model, logits.shape[1])
    probs = logits.softmax(dim=1)
    notes = []
    if topk > logits.shape[1]:
        notes.append(f"top-{topk} asked for, the model has {logits.shape[1]} classes")
    k = min(topk, logits.shape[1])
    result = VisualizeResult(out / "index.html", out / "filters.png", [], None, notes)

    out.mkdir(parents=True, exist_ok=True)
    first = filter_layer(model)
    atomic_write_bytes(result.filters, draw.draw_filters(filters(model), first))
    try:
        result.cam_layer = default_cam_layer(model, tuple(batch.shape[1:]))
    except InvalidArgumentError as err:  # the MLP: no spatial map to weight
        result.notes.append(f"no class activation map: {err}")

    used: set[str] = set()
    for i, path in enumerate(paths):
        folder_name = safe_name(Path(path).stem)
        while folder_name in used or folder_name == "filters.png":
            folder_name += "_"
        used.add(folder_name)
        folder = out / folder_name
        folder.mkdir(exist_ok=True)
        picture = draw.display_image(batch[i], pre.mean, pre.std)
        chosen = [target] if target is not None else probs[i].topk(k).indices.tolist()
        top = [(c, class_names[c], float(probs[i, c])) for c in chosen]
        pictures = ImagePictures(str(path), folder, top)
        for name in names:
            label = f"{name} (end of stage {stages[name]})" if name in stages else name
            file = folder / f"maps_{safe_name(name)}.png"
            atomic_write_bytes(file, draw.draw_maps(picture, outputs[name][i], label))
            pictures.maps[name] = file
        if result.cam_layer is not None:
            maps = class_activation_map(
                model, batch[i : i + 1].expand(len(chosen), -1, -1, -1), chosen,
                layer=result.cam_layer, method=cam,
            )  # fmt: skip
            for (c, cname, p), m in zip(top, maps, strict=True):
                stem = str(c) if cname == str(c) else f"{c}_{safe_name(cname)}"
                file = folder / f"cam_{stem}.png"
                title = (
                    f"{cname} (class {c}): probability {100 * p:.1f}% — {cam} on {result.cam_layer}"
                )
                atomic_write_bytes(file, draw.draw_cam(picture, m, title))
                pictures.cams[c] = file
        result.images.append(pictures)
    atomic_write_text(result.index, _html(result, pre.describe_steps(), cam, type(model).__name__))
    return result


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _html(result: VisualizeResult, preprocessing: str, cam: str, model: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cnnzoo visualize: {e(model)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
        "img{max-width:100%;display:block;margin:.5em 0}h2{border-top:1px solid #ccc;"
        "padding-top:.5em}</style></head><body>",
        f"<h1>{e(model)}: filters, feature maps, class activation maps</h1>",
        f"<p>Images prepared as the weights ask: {e(preprocessing)}.</p>",
        *[f"<p>Note: {e(note)}.</p>" for note in result.notes],
        "<h2>Filters</h2>",
        _img(result.filters, "the first layer's filters"),
    ]
    for pictures in result.images:
        parts.append(f"<h2>{e(pictures.path)}</h2><ol>")
        parts += [f"<li>{e(name)} (class {c}): {100 * p:.1f}%</li>" for c, name, p in pictures.top]
        parts.append("</ol>")
        if pictures.cams:
            parts.append(
                f"<h3>Class activation maps ({e(cam)} on {e(result.cam_layer or '')})</h3>"
            )
            names = {c: name for c, name, _ in pictures.top}
            parts += [
                _img(f, f"class activation map of {names[c]}") for c, f in pictures.cams.items()
            ]
        parts.append("<h3>Feature maps</h3>")
        parts += [_img(f, f"feature maps of {name}") for name, f in pictures.maps.items()]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
