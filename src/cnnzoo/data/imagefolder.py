"""Image folders: one sub-folder per class, scanned before anything is trained.

Layouts: ``PATH/train/<class>/…`` and ``PATH/val/<class>/…`` when both exist, otherwise
``PATH/<class>/…`` with a fixed split (20 % of each class to validation, seed 0). Class folders
are searched recursively. Names starting with a dot (``.ipynb_checkpoints``, ``.DS_Store``) are
hidden and ignored, as are files that are not images by their extension; all of them are
reported. Every image is opened, verified and fully decoded by :func:`scan_imagefolder`, so a
truncated JPEG stops the run before training rather than crashing epoch 7.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnzoo.data.colour import native_channels, pil_to_tensor, source_kind
from cnnzoo.errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp"
)  # fmt: skip
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass
class ImageRecord:
    """One readable image found by the scan.

    Attributes:
        path: the file.
        label: class index into :attr:`ScanReport.class_names`.
        split: ``"train"``, ``"val"`` (folder layout) or ``None`` (to be split).
        kind: its PIL mode (``"P+transparency"`` for a palette with a transparent colour).
        size: ``(width, height)``.
        stats: per requested channel count (1, 3): pixel count, per-channel sum and sum of
            squares of the decoded [0, 1] values, so that mean/std need no second decode.
    """

    path: Path
    label: int
    split: str | None
    kind: str
    size: tuple[int, int]
    stats: dict[int, tuple[int, np.ndarray, np.ndarray]] = field(repr=False)


@dataclass
class ScanReport:
    """What :func:`scan_imagefolder` found, every problem with its path.

    Attributes:
        root: the folder scanned.
        layout: ``"train/val"`` (both sub-folders exist) or ``"classes"`` (one level of classes).
        class_names: class folder names, sorted; a label is an index into this list.
        images: readable images.
        unreadable: ``(path, reason)`` of images that fail to open, verify or decode.
        empty_classes: class folders with no readable image.
        hidden: hidden folders and files (ignored, with everything under a hidden folder).
        non_images: files whose extension is not an image's (ignored).
        stray: files outside any class folder (ignored).
        unknown_val_classes: ``val`` class folders with no ``train`` counterpart.
    """

    root: Path
    layout: str
    class_names: list[str]
    images: list[ImageRecord] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    empty_classes: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)
    stray: list[Path] = field(default_factory=list)
    unknown_val_classes: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the folder can be trained on: some classes, no unreadable image, no empty
        class, no validation class without training images."""
        return bool(self.class_names) and not (
            self.unreadable or self.empty_classes or self.unknown_val_classes
        )

    def first_problem(self) -> str | None:
        """The first problem that stops training, as one sentence naming the path and the fix."""
        count = len(self.unreadable)
        if self.unreadable:
            path, reason = self.unreadable[0]
            more = f" (and {count - 1} more; `scan_imagefolder` lists them)" if count > 1 else ""
            return f"image {path} cannot be read ({reason}){more}: remove or replace it."
        if self.empty_classes:
            return (
                f"class folder {self.empty_classes[0]} has no readable image: add images or "
                "remove the folder."
            )
        if self.unknown_val_classes:
            return (
                f"validation class folder {self.unknown_val_classes[0]} has no counterpart in "
                f"{self.root / 'train'}: rename or remove it."
            )
        if not self.class_names:
            return (
                f"{self.root} has no class folders: expected one sub-folder of images per class "
                "(or train/ and val/ each holding them)."
            )
        return None

    def lines(self) -> list[str]:
        """A human-readable summary, one finding per line, paths included."""
        counts = Counter(r.split or "all" for r in self.images)
        out = [
            f"{self.root}: layout {self.layout}, {len(self.class_names)} classes, "
            + ", ".join(f"{n:,} {s} images" for s, n in sorted(counts.items()))
        ]
        out += [f"unreadable image {p}: {why}" for p, why in self.unreadable]
        out += [f"empty class folder {p}" for p in self.empty_classes]
        out += [f"validation class without training folder {p}" for p in self.unknown_val_classes]
        out += [f"ignored hidden {'folder' if p.is_dir() else 'file'} {p}" for p in self.hidden]
        out += [f"ignored non-image file {p}" for p in self.non_images]
        out += [f"ignored file outside class folders {p}" for p in self.stray]
        return out


def scan_imagefolder(path: str | Path) -> ScanReport:
    """Scan an image folder: classes, readable images, and every problem with its path.

    Each image is opened, checked with ``PIL.Image.verify`` and then fully decoded (``verify``
    alone passes many truncated JPEGs). Nothing is raised for bad images; see
    :meth:`ScanReport.first_problem`.

    Raises:
        DataError: ``path`` is not a folder.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist: expected {root}/<class>/<images> "
            f"(or {root}/train/<class>/… and {root}/val/<class>/…)."
        )
    split_layout = (root / "train").is_dir() and (root / "val").is_dir()
    top = root / "train" if split_layout else root
    report = ScanReport(root, "train/val" if split_layout else "classes", [])
    report.class_names = _class_folders(top, report)
    if split_layout:
        for item in _visible(root, report):
            if item.name not in ("train", "val"):
                report.stray.append(item)
        for name in _class_folders(root / "val", report):
            if name not in report.class_names:
                report.unknown_val_classes.append(root / "val" / name)
    for label, name in enumerate(report.class_names):
        for split in ("train", "val") if split_layout else (None,):
            folder = root / split / name if split else root / name
            if split == "val" and not folder.is_dir():
                continue  # a class may lack validation images; the notes say so
            found = 0
            for file in _walk(folder, report):
                found += _scan_image(file, label, split, report)
            if not found:
                report.empty_classes.append(folder)
    return report


def _visible(folder: Path, report: ScanReport) -> list[Path]:
    items = []
    for item in sorted(folder.iterdir()):
        if item.name.startswith("."):
            report.hidden.append(item)
        else:
            items.append(item)
    return items


def _class_folders(folder: Path, report: ScanReport) -> list[str]:
    names = []
    for item in _visible(folder, report):
        if item.is_dir():
            names.append(item.name)
        elif folder == report.root:
            report.stray.append(item)
    return names


def _walk(folder: Path, report: ScanReport) -> list[Path]:
    files = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        base = Path(here)
        report.hidden += [base / d for d in sorted(dirs) if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # prune hidden folders
        for name in sorted(names):
            file = base / name
            if name.startswith("."):
                report.hidden.append(file)
            elif file.suffix.lower() not in IMAGE_EXTENSIONS:
                report.non_images.append(file)
            else:
                files.append(file)
    return files


def _scan_image(file: Path, label: int, split: str | None, report: ScanReport) -> int:
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is about size, not damage; the error form still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img.verify()
            with Image.open(file) as img:  # verify() leaves the image unusable: reopen to decode
                img.load()
                kind, size = source_kind(img), img.size
                stats = {c: _pixel_stats(pil_to_tensor(img, c)) for c in (1, 3)}
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError… for damaged files
        report.unreadable.append((file, str(exc) or type(exc).__name__))
        return 0
    report.images.append(ImageRecord(file, label, split, kind, size, stats))
    return 1


def _pixel_stats(x: torch.Tensor) -> tuple[int, np.ndarray, np.ndarray]:
    flat = x.double().flatten(1)  # (C, H·W)
    return flat.shape[1], flat.sum(1).numpy(), (flat * flat).sum(1).numpy()


def split_records(
    records: list[ImageRecord], class_names: list[str], fraction: float = VAL_FRACTION
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The fixed split for the ``classes`` layout: per class, ``fraction`` (20 %; rounded, at
    least one and at most all but one when the class has two or more images) to validation,
    chosen by a generator seeded from (0, CRC-32 of the class name) over the class's files
    sorted by path, so that a class's split never changes when another class is added or gains
    images."""
    by_label: dict[int, list[ImageRecord]] = {}
    for record in sorted(records, key=lambda r: str(r.path)):
        by_label.setdefault(record.label, []).append(record)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for label, group in sorted(by_label.items()):
        n = len(group)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        key = zlib.crc32(class_names[label].encode())
        order = np.random.default_rng([SPLIT_SEED, key]).permutation(n)
        chosen = set(order[:n_val].tolist())
        for i, record in enumerate(group):
            (val if i in chosen else train).append(record)
    return train, val


def check_validation(report: ScanReport, train: list[ImageRecord], val: list[ImageRecord]) -> None:
    """Every class must have validation images: an accuracy over no images (or a class never
    validated) is no measurement. One line naming the classes and the fix. (Every class has
    training images: the scan refuses an empty class folder, and the split keeps at least one
    image of each class for training.)"""
    names = report.class_names
    validated = {r.label for r in val}
    missing = [i for i in range(len(names)) if i not in validated]
    if not missing:
        return
    listed = ", ".join(names[i] for i in missing[:10])
    listed += f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    which = "every class" if len(missing) == len(names) else f"class {listed}"
    if report.layout == "train/val":
        fix = f"add images of each to {report.root / 'val'}/<class>/"
    else:
        counts = Counter(r.label for r in train)
        single = [names[i] for i in missing if counts[i] < 2]
        who = ", ".join(single[:3]) + (", …" if len(single) > 3 else "")
        has = "has one image" if len(single) == 1 else "have one image each"
        fix = (
            f"add images ({who} {has}, and a class needs 2 or more to be split), or give "
            f"{report.root}/train/ and {report.root}/val/ folders"
        )
    raise DataError(f"{report.root}: the split leaves {which} without validation images: {fix}.")


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(image, label)`` items, each image passed through ``transform`` on access: what a
    :class:`~cnnzoo.data.DataBundle` holds (in memory or read from a folder), sized, and
    re-normalised by swapping the transform."""

    transform: Callable[[torch.Tensor], torch.Tensor]

    def __len__(self) -> int:
        raise NotImplementedError


class ImageFolderDataset(ImageDataset):
    """Images decoded on access by the colour policy, then passed through ``transform``.

    Attributes:
        samples: ``(path, label)`` pairs.
        labels: the labels as a tensor, for samplers that balance classes.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        chans: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.samples = samples
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.chans = chans
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                x = pil_to_tensor(img, self.chans)
        except Exception as exc:  # changed on disk since the scan
            raise DataError(f"image {path} cannot be read ({exc}): remove or replace it.") from None
        return self.transform(x), label


def gray_folder(records: list[ImageRecord]) -> bool:
    """True when every image is gray (then the folder's native channel count is 1)."""
    return all(native_channels(r.kind) == 1 for r in records)
