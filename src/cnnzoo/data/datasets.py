"""``load_dataset``: every supported dataset as a train and a validation dataset plus its facts.

The built-in ``digits`` needs nothing on disk. ``mnist``, ``fashion-mnist``, ``cifar10`` and
``cifar100`` are read from ``root`` in their standard formats (``download=True`` fetches them);
``imagefolder:PATH`` reads class folders. See ``docs/data.md`` for the layouts and the policies.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from cnnzoo.checks import check_int, check_number, did_you_mean
from cnnzoo.data.colour import colour_rule, convert_channels
from cnnzoo.data.formats import find_file, read_cifar_batch, read_cifar_names, read_idx
from cnnzoo.data.imagefolder import (
    SPLIT_SEED,
    VAL_FRACTION,
    ImageDataset,
    ImageFolderDataset,
    ScanReport,
    check_validation,
    gray_folder,
    scan_imagefolder,
    split_records,
)
from cnnzoo.data.preprocessing import Normalize, Preprocessing, channel_order
from cnnzoo.data.transforms import AUGMENTS, build_transform, describe_augment, prepare_images
from cnnzoo.errors import DataError, InvalidArgumentError

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH")
DEFAULT_ROOT = Path("data")
DIGITS_VAL = 360  # of 1,797: the validation size of the project's fixed digits split
DIGITS_SPLIT_SEED = 0
# In-memory images whose channels or size change are converted and resized once, at load time, up
# to this many bytes of float32 per split; beyond it (say MNIST at 224×224) image by image.
PREPARE_LIMIT_BYTES = 1 << 30
# A horizontal flip keeps a photo of a cat a cat, but turns most digits into other shapes; it is
# kept off for Fashion-MNIST too, so that the three 28×28 gray sets follow one rule.
FLIP_OK = {"cifar10", "cifar100", "imagefolder"}

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
}
# Side of the images of the built-in and standard datasets; an image folder's images may differ.
NATIVE_SIDES = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's download place
_FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]  # fmt: skip
_CIFAR = {
    # name: (folder, train files, validation files, label key, meta file, meta key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        "batches.meta",
        b"label_names",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels", "meta",
                 b"fine_label_names", 100),
}  # fmt: skip

_STATS_CACHE: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


@dataclass
class DataBundle:
    """A dataset ready for training: two datasets and everything a run needs to record.

    Attributes:
        train: training dataset; items are ``(float tensor (C, H, W), int label)``, normalised,
            augmented as asked.
        val: validation dataset, a separate object with its own transform: never augmented.
        num_classes: number of classes.
        in_chans: channels of every item (``C``).
        image_size: side of every item (``H = W``).
        class_names: one name per label.
        mean: per-channel mean subtracted, from the training split at native size in [0, 1].
        std: per-channel standard deviation divided by, likewise.
        name: the dataset name as given (``"imagefolder:PATH"`` with its path).
        notes: what was done to the data, one sentence each, for the run's log.
        seed: the seed passed to :func:`load_dataset` (augmentation and shuffling only; no split
            depends on it).
        preprocessing: how every image is prepared (:class:`Preprocessing`): the validation
            transform is exactly ``preprocessing.transform()``, the training one adds the
            augmentation before its normalisation. :func:`load_dataset` always sets it; the
            trainer records it in the weights it writes.
    """

    train: ImageDataset
    val: ImageDataset
    num_classes: int
    in_chans: int
    image_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    preprocessing: Preprocessing | None = None

    def with_normalization(
        self, mean: tuple[float, ...], std: tuple[float, ...], source: str
    ) -> DataBundle:
        """The same data normalised with other per-channel statistics, such as those a
        pretrained network was trained with; ``source`` says whose, for the notes."""
        if len(mean) != self.in_chans or len(std) != self.in_chans:
            raise InvalidArgumentError(
                f"mean/std of {source} have {len(mean)} channels, the data {self.in_chans}."
            )

        def renormalised(dataset: ImageDataset) -> ImageDataset:
            dataset = copy.copy(dataset)  # the images are shared; only the transform differs
            transform = dataset.transform
            if not (
                isinstance(transform, v2.Compose)
                and isinstance(transform.transforms[-1], Normalize)
            ):
                raise TypeError(f"expected Normalize last in {transform}")
            steps = list(transform.transforms)
            dataset.transform = v2.Compose([*steps[:-1], Normalize(mean, std)])
            return dataset

        shown = ", ".join(f"{m:.3f}" for m in mean), ", ".join(f"{s:.3f}" for s in std)
        return replace(
            self,
            train=renormalised(self.train),
            val=renormalised(self.val),
            mean=tuple(mean),
            std=tuple(std),
            notes=[*self.notes, f"normalised as {source}: mean ({shown[0]}), std ({shown[1]})"],
            preprocessing=None
            if self.preprocessing is None
            else replace(
                self.preprocessing,
                mean=tuple(mean),
                std=tuple(std),
                source=f"{self.preprocessing.source}, normalised as {source}",
            ),
        )


class ArrayDataset(ImageDataset):
    """Images held in memory as a ``(N, C, H, W)`` tensor (uint8 for 0–255 data, float32 in
    [0, 1] otherwise), converted to float on access and passed through ``transform``.

    Attributes:
        images: the stored images: as read, or (when :func:`load_dataset` changed channels or
            size) already converted and resized, float32 in [0, 1].
        labels: int64 labels ``(N,)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(_to_unit(self.images[index])), int(self.labels[index])


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


@dataclass
class _Arrays:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    class_names: list[str]
    cache_key: tuple
    notes: list[str]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
    augment: str = "none",
    seed: int = 0,
    download: bool = False,
    preprocessing: Preprocessing | None = None,
    val_fraction: float | None = None,
) -> DataBundle:
    """Load a dataset by name as separate training and validation datasets.

    Args:
        name: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` or
            ``imagefolder:PATH``.
        root: folder holding the downloaded datasets (``./data`` when ``None``); not used by
            ``digits`` or ``imagefolder``, whose path is in the name.
        image_size: output side; ``None`` keeps the native size (for an image folder: the shorter
            side of its most common image size). Resizing is bilinear and antialiased: square
            images straight to the side, an image folder's images shorter side to the side then
            a centre crop (the bundle's ``preprocessing`` records which).
        in_chans: 1 or 3; ``None`` keeps the native channels (1 for an all-gray folder).
        augment: ``none``, ``light`` or ``standard``, applied to the training split only.
        seed: recorded in the bundle; augmentation and shuffling randomness is seeded by the
            loader (:func:`cnnzoo.data.make_loader`), and no split depends on it.
        download: fetch ``mnist``, ``fashion-mnist``, ``cifar10`` or ``cifar100`` into ``root``
            when missing (the only use of the network).
        preprocessing: the preparation a set of weights expects (``model.pretrained_cfg``),
            used as it is: its channels, size, resize rule, interpolation and mean/std replace
            ``in_chans``, ``image_size``, the dataset's own resize rule and the training
            split's statistics, so that a validation item is exactly what
            ``preprocessing.prepare`` (and ``predict``) make of the same image.
        val_fraction: the share of each class an image folder of class folders sends to
            validation (``None``: 20 %); in (0, 1). Other datasets have fixed splits.

    Raises:
        DataError: unknown name, files missing or damaged, an unreadable image, an empty class,
            fewer than 2 classes, a class left without validation images.
        InvalidArgumentError: ``image_size``, ``in_chans``, ``augment`` or ``val_fraction`` out
            of range, or ``val_fraction`` for a dataset whose split is fixed.
    """
    if preprocessing is not None:
        in_chans, image_size = preprocessing.input_size[0], preprocessing.input_size[1]
    _check_arguments(image_size, in_chans, augment)
    if val_fraction is not None:
        check_number("--val-fraction", val_fraction, low=0, above=True, below=1)
    key, folder = _parse_name(name)
    if key == "imagefolder":
        assert folder is not None  # _parse_name gives imagefolder:PATH its path
        return _load_imagefolder(
            name, folder, image_size, in_chans, augment, seed, preprocessing, val_fraction
        )
    if val_fraction is not None:
        raise InvalidArgumentError(
            f"--val-fraction splits an image folder of class folders, and {name} has a fixed "
            "split: leave --val-fraction out."
        )
    root = Path(root).expanduser() if root is not None else DEFAULT_ROOT
    if key == "digits":
        arrays = _digits()
    elif key in _IDX_FOLDERS:
        arrays = _idx_dataset(key, root, download)
    else:
        arrays = _cifar(key, root, download)
    return _load_arrays(key, arrays, image_size, in_chans, augment, seed, preprocessing)


def _load_arrays(
    key: str,
    arrays: _Arrays,
    image_size: int | None,
    in_chans: int | None,
    augment: str,
    seed: int,
    preprocessing: Preprocessing | None,
) -> DataBundle:
    """A bundle of in-memory images (digits, MNIST, CIFAR), prepared as
    :func:`load_dataset` says."""
    native_chans, native_size = arrays.train_x.shape[1], arrays.train_x.shape[-1]
    chans = native_chans if in_chans is None else in_chans
    size = native_size if image_size is None else image_size
    notes = list(arrays.notes)
    if chans != native_chans:
        rule = (
            "gray repeated to RGB" if chans == 3 else "RGB → luminance 0.299 R + 0.587 G + 0.114 B"
        )
        notes.append(f"channels {native_chans} → {chans} ({rule})")
    if preprocessing is not None:
        pre = preprocessing
        notes.append(f"preprocessing of the weights: {pre.describe()}")
    else:
        mean, std = _array_stats((*arrays.cache_key, chans), arrays.train_x, chans)
        # Square images resized straight to the side (the same as shorter side then crop).
        pre = _own_preprocessing(chans, size, None, mean, std, arrays.class_names, key)
        if size != native_size:
            notes.append(f"resized {native_size}×{native_size} → {size}×{size} (bilinear)")
    flip = key in FLIP_OK
    notes.append(describe_augment(augment, size, flip, key))
    native_shape = (native_chans, native_size, native_size)

    def dataset(images: torch.Tensor, labels: torch.Tensor, aug: str) -> ArrayDataset:
        # The deterministic steps (channels, resize) once for all images when they do anything
        # and fit; the per-image transform is then only the augmentation and normalisation.
        prepare = not pre.keeps(native_shape) and (
            len(images) * chans * size * size * 4 <= PREPARE_LIMIT_BYTES
        )
        if prepare:
            images = prepare_images(_to_unit(images), pre)
        transform = build_transform(pre, augment=aug, flip=flip, prefix=not prepare)
        return ArrayDataset(images, labels, transform)

    train = dataset(arrays.train_x, arrays.train_y, augment)
    val = dataset(arrays.val_x, arrays.val_y, "none")
    return _bundle(train, val, arrays.class_names, pre, key, notes, seed)


def _bundle(
    train: ImageDataset,
    val: ImageDataset,
    class_names: list[str],
    pre: Preprocessing,
    name: str,
    notes: list[str],
    seed: int,
) -> DataBundle:
    """The bundle whose channels, side and statistics are those of its ``pre``."""
    return DataBundle(
        train=train,
        val=val,
        num_classes=len(class_names),
        in_chans=pre.input_size[0],
        image_size=pre.input_size[1],
        class_names=class_names,
        mean=pre.mean,
        std=pre.std,
        name=name,
        notes=notes,
        seed=seed,
        preprocessing=pre,
    )


def _own_preprocessing(
    chans: int,
    size: int,
    resize: int | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_names: list[str],
    name: str,
) -> Preprocessing:
    """The preparation of a dataset without weights: bilinear, its own statistics."""
    return Preprocessing(
        input_size=(chans, size, size),
        resize=resize,
        crop=size if resize else None,
        interpolation="bilinear",
        mean=tuple(mean),
        std=tuple(std),
        channel_order=channel_order(chans),
        class_names=tuple(class_names),
        source=f"the training split of {name}",
        dataset=name,
    )


def _check_arguments(image_size: int | None, in_chans: int | None, augment: str) -> None:
    if image_size is not None:
        check_int("image_size", image_size)
    if in_chans not in (None, 1, 3):
        raise InvalidArgumentError(f"in_chans must be 1 (gray) or 3 (RGB), got {in_chans!r}.")
    if augment not in AUGMENTS:
        raise InvalidArgumentError(
            f"unknown augment {augment!r}: choose one of {', '.join(AUGMENTS)}."
        )


def dataset_key(name: str) -> str:
    """The dataset ``name`` means, as :func:`load_dataset` reads it: case, ``_``/``-`` and
    aliases resolved (``CIFAR10``, ``cifar-10`` → ``cifar10``), ``imagefolder`` for
    ``imagefolder:PATH``.

    Raises:
        DataError: an unknown name (close matches suggested).
    """
    return _parse_name(name)[0]


def native_side(name: str) -> int | None:
    """The side of the images of dataset ``name`` (any spelling :func:`dataset_key` accepts);
    ``None`` for an image folder."""
    return NATIVE_SIDES.get(dataset_key(name))


def _parse_name(name: str) -> tuple[str, Path | None]:
    text = name.strip()
    if text.lower().startswith("imagefolder:"):
        path = text.split(":", 1)[1]
        if not path:
            raise DataError("imagefolder needs a path: write imagefolder:PATH.")
        return "imagefolder", Path(path).expanduser()
    key = text.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    known = [d for d in DATASETS if d != "imagefolder:PATH"]
    if key in known:
        return key, None
    hint = did_you_mean(key, [*known, "imagefolder"])
    raise DataError(f"unknown dataset {name!r}{hint}: known datasets: {', '.join(DATASETS)}.")


def _digits() -> _Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # shipped inside scikit-learn: no file, no network
    images = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)  # (N,1,8,8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    # The split is the project's fixed one, independent of the run's seed, so that accuracies of
    # different runs and models are measured on the same 360 images.
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_VAL,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    note = (
        f"split {len(train_idx):,}/{len(val_idx):,} stratified, seed {DIGITS_SPLIT_SEED} "
        "(scikit-learn train_test_split; fixed, independent of the run's seed)"
    )
    return _Arrays(
        images[train_idx],
        labels[train_idx],
        images[val_idx],
        labels[val_idx],
        [str(d) for d in range(10)],
        ("digits",),
        ["digits: scikit-learn's 8×8 UCI optdigits, values 0–16 scaled to [0, 1]", note],
    )


def _idx_dataset(key: str, root: Path, download: bool) -> _Arrays:
    candidates = [root / _IDX_FOLDERS[key] / "raw", root / key, root]
    folder, found = _locate(candidates, _IDX_FILES, find_file)
    if found is None and download:
        _download(key, root)
        folder, found = _locate(candidates, _IDX_FILES, find_file)
    if found is None:
        raise _missing(key, folder, candidates, [f"{f}[.gz]" for f in _IDX_FILES])
    arrays = [read_idx(path) for path in found]
    for path, array, ndim in zip(found, arrays, (3, 1, 3, 1), strict=True):
        if array.ndim != ndim:
            raise DataError(
                f"{path} holds a {array.ndim}-dimensional array, not {ndim} as {path.name} "
                "should: replace it."
            )
    for images, labels, path in (
        (arrays[0], arrays[1], found[1]),
        (arrays[2], arrays[3], found[3]),
    ):
        if len(images) != len(labels) or labels.min() < 0 or labels.max() > 9:
            raise DataError(
                f"{path} has {len(labels)} labels in {labels.min()}..{labels.max()} for "
                f"{len(images)} images with labels 0..9: replace it."
            )
    tensors = [torch.from_numpy(a.astype(np.uint8 if a.ndim == 3 else np.int64)) for a in arrays]
    return _Arrays(
        tensors[0].unsqueeze(1),  # (N, 1, 28, 28)
        tensors[1],
        tensors[2].unsqueeze(1),
        tensors[3],
        _FASHION_NAMES if key == "fashion-mnist" else [str(d) for d in range(10)],
        (key, *_fingerprint(found)),
        [
            f"{key}: IDX files from {folder}",
            f"split: the official {len(arrays[0]):,} training / {len(arrays[2]):,} test images "
            "(test used for validation)",
        ],
    )


def _cifar(key: str, root: Path, download: bool) -> _Arrays:
    sub, train_files, val_files, label_key, meta_file, meta_key, classes = _CIFAR[key]
    candidates = [root / sub, root]
    names = (*train_files, *val_files)

    def exact(folder: Path, name: str) -> Path | None:
        return folder / name if (folder / name).is_file() else None

    folder, found = _locate(candidates, names, exact)
    if found is None and download:
        _download(key, root)
        folder, found = _locate(candidates, names, exact)
    if found is None:
        raise _missing(key, folder, candidates, list(names))
    batches = [read_cifar_batch(path, label_key) for path in found]
    n_train = len(train_files)
    train_x = np.concatenate([b[0] for b in batches[:n_train]])
    train_y = np.concatenate([b[1] for b in batches[:n_train]])
    val_x = np.concatenate([b[0] for b in batches[n_train:]])
    val_y = np.concatenate([b[1] for b in batches[n_train:]])
    for labels, path in ((train_y, found[0]), (val_y, found[-1])):
        if labels.min() < 0 or labels.max() >= classes:
            raise DataError(f"{path} has labels outside 0..{classes - 1}: replace it.")
    notes = [
        f"{key}: python-pickle batches from {folder} (restricted unpickler)",
        f"split: the official {len(train_x):,} training / {len(val_x):,} test images "
        "(test used for validation)",
    ]
    class_names = read_cifar_names(folder / meta_file, meta_key)
    if class_names is None or len(class_names) != classes:
        class_names = _CIFAR10_NAMES if key == "cifar10" else [str(i) for i in range(classes)]
        if key == "cifar100":
            notes.append(f"no {meta_file} in {folder}: classes named by number")
    return _Arrays(
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(val_x),
        torch.from_numpy(val_y),
        class_names,
        (key, *_fingerprint(found)),
        notes,
    )


def _locate(
    candidates: list[Path], names: tuple[str, ...], finder: Callable[[Path, str], Path | None]
) -> tuple:
    """The first candidate folder holding every file, with the files; otherwise the folder
    holding the most of them (to name in the error) and ``None``."""
    best, best_count = candidates[0], 0
    for folder in candidates:
        paths = [finder(folder, n) for n in names]
        if all(paths):
            return folder, paths
        count = sum(p is not None for p in paths)
        if count > best_count:
            best, best_count = folder, count
    return best, None


def _missing(key: str, folder: Path, candidates: list[Path], expected: list[str]) -> DataError:
    others = [str(c) for c in candidates if c != folder]
    present = [e for e in expected if any(folder.glob(e.replace("[.gz]", "*")))]
    if present:  # a partial copy: name what is missing where the rest is
        absent = [e for e in expected if e not in present]
        return DataError(
            f"{key} is incomplete in {folder}: {', '.join(absent)} missing (expected "
            f"{', '.join(expected)}); copy the missing files there or pass download=True "
            "(--download)."
        )
    return DataError(
        f"{key} is not on disk: expected {', '.join(expected)} in {folder}"
        + (f" (or in {' or '.join(others)})" if others else "")
        + "; pass download=True (--download) to fetch it, or set root (--data-root) to the "
        "folder that holds it."
    )


def _fingerprint(paths: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for path in paths:
        st = path.stat()
        out.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return out


def _download(key: str, root: Path) -> None:
    """Fetch the archives with torchvision's downloader (checksummed). Only the download is
    torchvision's: its CIFAR classes would unpickle the batches without restriction."""
    from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    if key in _IDX_FOLDERS:
        source = MNIST if key == "mnist" else FashionMNIST
        folder = root / _IDX_FOLDERS[key] / "raw"
        for filename, md5 in source.resources:
            if find_file(folder, filename.removesuffix(".gz")):
                continue
            errors = []
            for mirror in source.mirrors:
                try:
                    download_url(f"{mirror}{filename}", str(folder), filename, md5)
                    break
                except Exception as exc:  # try the next mirror
                    errors.append(f"{mirror}: {exc}")
            else:
                raise DataError(f"could not download {filename} ({'; '.join(errors)}).")
        return
    source = CIFAR10 if key == "cifar10" else CIFAR100
    try:
        download_and_extract_archive(source.url, str(root), filename=source.filename,
                                     md5=source.tgz_md5)  # fmt: skip
    except Exception as exc:
        raise DataError(f"could not download {source.url} into {root} ({exc}).") from None


def _array_stats(
    key: tuple, images: torch.Tensor, chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of ``images`` in [0, 1] after the
    channel conversion, in float64 over chunks (a float64 copy of CIFAR would take 1.2 GB);
    cached for the process by dataset, file identity and channels."""
    if key in _STATS_CACHE:
        return _STATS_CACHE[key]
    total = torch.zeros(chans, dtype=torch.float64)
    squares = torch.zeros(chans, dtype=torch.float64)
    for start in range(0, len(images), 4096):
        chunk = convert_channels(_to_unit(images[start : start + 4096]).double(), chans)
        flat = chunk.transpose(0, 1).flatten(1)  # (C, n·H·W)
        total += flat.sum(1)
        squares += (flat * flat).sum(1)
    count = images.shape[0] * images.shape[-2] * images.shape[-1]
    result = _mean_std(count, total.numpy(), squares.numpy())
    _STATS_CACHE[key] = result
    return result


def _mean_std(
    count: int, total: np.ndarray, squares: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = total / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    # A constant channel would divide by zero; 1 leaves it merely centred.
    std = [math.sqrt(v) if v > 1e-12 else 1.0 for v in var]
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _imagefolder_split(
    report: ScanReport, val_fraction: float | None, notes: list[str]
) -> tuple[list, list]:
    """The training and validation records: the train/ and val/ folders, or a fixed stratified
    split; each class must keep images on both sides (one line naming those that do not)."""
    if report.layout == "train/val":
        if val_fraction is not None:
            raise InvalidArgumentError(
                f"{report.root} is split by its train/ and val/ folders: leave --val-fraction "
                "out (or merge the folders to split by a fraction)."
            )
        train = [r for r in report.images if r.split == "train"]
        val = [r for r in report.images if r.split == "val"]
        notes.append(f"split: the folders train/ and val/ ({len(train):,}/{len(val):,} images)")
    else:
        fraction = VAL_FRACTION if val_fraction is None else val_fraction
        train, val = split_records(report.images, report.class_names, fraction)
        notes.append(
            f"split {len(train):,}/{len(val):,} stratified ({fraction:.0%} of each class to "
            f"validation), seed {SPLIT_SEED}; fixed, independent of the run's seed"
        )
    check_validation(report, train, val)
    return train, val


def _load_imagefolder(
    name: str,
    folder: Path,
    image_size: int | None,
    in_chans: int | None,
    augment: str,
    seed: int,
    preprocessing: Preprocessing | None,
    val_fraction: float | None = None,
) -> DataBundle:
    report = scan_imagefolder(folder)
    problem = report.first_problem()
    if problem:
        raise DataError(problem)
    if len(report.class_names) < 2:
        raise DataError(
            f"{report.root} has one class ({report.class_names[0]}): a classifier needs at "
            "least 2, so add a folder of images for each other class."
        )
    notes = [f"imagefolder: {len(report.class_names)} classes from {report.root}"]
    train, val = _imagefolder_split(report, val_fraction, notes)
    notes += [f"ignored hidden {'folder' if p.is_dir() else 'file'} {p}" for p in report.hidden]
    notes += [f"ignored non-image file {p}" for p in report.non_images]
    notes += [f"ignored file outside class folders {p}" for p in report.stray]
    native_chans = 1 if gray_folder(report.images) else 3
    chans = native_chans if in_chans is None else in_chans
    rules = Counter(colour_rule(r.kind, chans) for r in report.images)
    for rule, count in sorted(rules.items(), key=lambda item: str(item[0])):
        if rule is not None:
            notes.append(f"colour: {rule}: {count:,} image{'s' if count > 1 else ''}")
    sizes = Counter(r.size for r in train)
    (width, height), common = sizes.most_common(1)[0]
    native = min(width, height)
    size = native if image_size is None else image_size
    uniform = all(r.size == (size, size) for r in report.images)
    if image_size is None and not uniform:
        notes.append(
            f"native size {native}: the shorter side of the most common size {width}×{height} "
            f"({common:,} of {len(train):,} training images)"
        )
    if preprocessing is not None:
        pre = preprocessing
        notes.append(f"preprocessing of the weights: {pre.describe()}")
    else:
        # train is not empty: its most common size was read above.
        (count, total, squares), *rest = (r.stats[chans] for r in train)
        for n, s, q in rest:
            count, total, squares = count + n, total + s, squares + q
        mean, std = _mean_std(count, total, squares)
        # Images that differ in size and aspect: the shorter side to the side, then a centre
        # crop (an image already size × size passes unchanged), recorded so that predict does
        # the same.
        pre = _own_preprocessing(chans, size, size, mean, std, report.class_names, name)
        if not uniform:
            notes.append(f"resized shorter side to {size}, centre crop {size}×{size} (bilinear)")
    notes.append(describe_augment(augment, size, True, "imagefolder"))

    def dataset(records: list, aug: str) -> ImageFolderDataset:
        transform = build_transform(pre, augment=aug, flip=True)
        return ImageFolderDataset([(r.path, r.label) for r in records], chans, transform)

    return _bundle(
        dataset(train, augment), dataset(val, "none"), report.class_names, pre, name, notes, seed
    )
