"""The data package: every format from tiny files written here, the fixed digits split, the
statistics, the colour policy, reproducible loaders, and one test per bad input."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.transforms import v2

from cnnzoo.data import load_dataset, make_loader, scan_imagefolder
from cnnzoo.data.colour import LUMA, pil_to_tensor
from cnnzoo.data.loader import mix_seed
from cnnzoo.errors import DataError, InvalidArgumentError

# --- writers of the on-disk formats -------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file by hand: two zero bytes, type 0x08 (ubyte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def make_idx_set(folder: Path, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def dump_py2_style(path: Path, obj: object) -> None:
    # Protocol 2, as the real CIFAR files (written by Python 2) use.
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def make_cifar10(root: Path, n: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        dump_py2_style(folder / name, batch)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump_py2_style(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder


def save_noise(path: Path, mode: str = "RGB", size: tuple[int, int] = (16, 16), seed: int = 0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(
        path
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """cat/ (5 PNG, one RGBA), dog/ (5 JPEG, one P-mode PNG, one 24×16), a hidden
    .ipynb_checkpoints folder, a hidden file and a non-image file."""
    root = tmp_path / "pets"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        save_noise(root / "cat" / f"{i}.png", seed=i)
        save_noise(root / "dog" / f"{i}.jpg", seed=10 + i)
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 8:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(root / "cat" / "alpha.png")
    save_noise(root / "dog" / "palette.png", mode="P", seed=20)
    save_noise(root / "dog" / "wide.png", size=(24, 16), seed=21)
    (root / ".ipynb_checkpoints").mkdir()
    save_noise(root / ".ipynb_checkpoints" / "x.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "dog" / "labels.txt").write_text("not an image")
    return root


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def unnormalise(x: torch.Tensor, bundle) -> torch.Tensor:
    mean = torch.tensor(bundle.mean).view(-1, 1, 1)
    std = torch.tensor(bundle.std).view(-1, 1, 1)
    return x * std + mean


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- digits ---------------------------------------------------------------------------------------


def test_digits_fixed_stratified_split_and_statistics():
    bundle = load_dataset("digits")
    digits = load_digits()
    # The split recomputed here independently: sklearn, stratified, 360 validation, seed 0.
    train_idx, val_idx = train_test_split(
        np.arange(1797), test_size=360, stratify=digits.target, random_state=0
    )
    assert (len(bundle.train), len(bundle.val)) == (1437, 360)
    assert (bundle.num_classes, bundle.in_chans, bundle.image_size) == (10, 1, 8)
    assert bundle.class_names == [str(d) for d in range(10)]
    val_labels = bundle.val.labels.numpy()
    expected_counts = np.bincount(digits.target[val_idx], minlength=10)
    assert np.bincount(val_labels, minlength=10).tolist() == expected_counts.tolist()
    # Stratified: each class's validation count is its share of 360, within one image.
    share = np.bincount(digits.target, minlength=10) * 360 / 1797
    assert np.all(np.abs(expected_counts - share) < 1)
    assert sorted(val_labels.tolist()) == sorted(digits.target[val_idx].tolist())

    pixels = digits.images[train_idx] / 16.0
    assert bundle.mean == pytest.approx((pixels.mean(),), abs=1e-9)
    assert bundle.std == pytest.approx((pixels.std(),), abs=1e-9)
    # An item, un-normalised, is the sklearn image scaled to [0, 1].
    x, label = bundle.val[0]
    first = np.sort(val_idx)[0]
    assert label == digits.target[first]
    np.testing.assert_allclose(
        unnormalise(x, bundle)[0].numpy(), digits.images[first] / 16, atol=1e-6
    )
    assert any("split 1,437/360 stratified, seed 0" in n for n in bundle.notes)


def test_digits_split_does_not_depend_on_seed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=7)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)


def test_digits_resize_and_gray_to_rgb():
    bundle = load_dataset("digits", image_size=32, in_chans=3)
    x, _ = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert len(set(bundle.mean)) == 1 and len(bundle.mean) == 3
    assert "resized 8×8 → 32×32 (bilinear)" in bundle.notes


def _steps(dataset) -> list[type]:
    return [type(t) for t in dataset.transform.transforms]


def test_validation_never_augmented_and_no_flip_for_digits():
    bundle = load_dataset("digits", augment="standard")
    assert bundle.train is not bundle.val and bundle.train.transform is not bundle.val.transform
    assert v2.RandomCrop in _steps(bundle.train) and v2.RandomAffine in _steps(bundle.train)
    assert v2.RandomHorizontalFlip not in _steps(bundle.train)
    assert not any(t.__name__.startswith("Random") for t in _steps(bundle.val))
    torch.manual_seed(0)
    first = bundle.val[5][0]
    torch.manual_seed(1)
    assert torch.equal(first, bundle.val[5][0])


# --- MNIST / Fashion-MNIST (IDX) -----------------------------------------------------------------


@pytest.mark.parametrize(("gz", "sub"), [(False, ""), (True, "MNIST/raw")])
def test_mnist_idx_plain_and_gzip(tmp_path: Path, gz: bool, sub: str):
    arrays = make_idx_set(tmp_path / sub, gz)
    bundle = load_dataset("mnist", root=tmp_path)
    assert (len(bundle.train), len(bundle.val), bundle.in_chans, bundle.image_size) == (
        20,
        10,
        1,
        28,
    )
    x, label = bundle.val[3]
    assert label == arrays["t10k-labels-idx1-ubyte"][3]
    expected = arrays["t10k-images-idx3-ubyte"][3] / 255
    np.testing.assert_allclose(unnormalise(x, bundle)[0].numpy(), expected, atol=1e-5)
    train = arrays["train-images-idx3-ubyte"] / 255
    assert bundle.mean == pytest.approx((train.mean(),)) and bundle.std == pytest.approx(
        (train.std(),)
    )


def test_fashion_mnist_names_and_rgb(tmp_path: Path):
    make_idx_set(tmp_path / "FashionMNIST" / "raw")
    bundle = load_dataset("fashion-mnist", root=tmp_path, in_chans=3, image_size=32)
    assert bundle.class_names[9] == "Ankle boot"
    assert bundle.train[0][0].shape == (3, 32, 32)


def test_truncated_idx_file_is_named(tmp_path: Path):
    make_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in one_line(exc) and "truncated" in str(exc.value)


def test_missing_dataset_names_path_and_files(tmp_path: Path):
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", root=tmp_path)
    text = one_line(exc)
    assert str(tmp_path / "MNIST" / "raw") in text and "t10k-labels-idx1-ubyte" in text
    assert "download" in text
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    assert (
        str(tmp_path / "cifar-10-batches-py") in one_line(exc)
        and "data_batch_5" in exc.value.args[0]
    )
    make_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", root=tmp_path)
    assert f"incomplete in {tmp_path}: t10k-labels-idx1-ubyte[.gz] missing" in one_line(exc)


# --- CIFAR (restricted unpickling) ---------------------------------------------------------------


def test_cifar10_batches(tmp_path: Path):
    folder = make_cifar10(tmp_path)
    bundle = load_dataset("cifar10", root=tmp_path)
    assert (len(bundle.train), len(bundle.val), bundle.in_chans, bundle.image_size) == (
        30,
        6,
        3,
        32,
    )
    assert bundle.class_names[0] == "airplane" and bundle.num_classes == 10
    with open(folder / "test_batch", "rb") as handle:
        test = pickle.load(handle, encoding="bytes")  # our own file, written just above
    x, label = bundle.val[2]
    assert label == test[b"labels"][2]
    expected = test[b"data"][2].reshape(3, 32, 32) / 255
    np.testing.assert_allclose(unnormalise(x, bundle).numpy(), expected, atol=1e-5)
    gray = load_dataset("cifar10", root=tmp_path, in_chans=1)
    luma = sum(w * expected[c] for c, w in enumerate(LUMA))
    np.testing.assert_allclose(unnormalise(gray.val[2][0], gray)[0].numpy(), luma, atol=1e-5)
    flips = load_dataset("cifar10", root=tmp_path, augment="standard")
    assert v2.RandomHorizontalFlip in _steps(flips.train)


def test_cifar100_fine_labels(tmp_path: Path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((4, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        dump_py2_style(folder / name, {b"data": data, b"fine_labels": [0, 99, 5, 7]})
    dump_py2_style(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    bundle = load_dataset("cifar100", root=tmp_path)
    assert bundle.num_classes == 100 and bundle.class_names[99] == "c99"
    assert bundle.train[1][1] == 99
    assert bundle.std == (1.0, 1.0, 1.0)  # a constant image: centred, not divided by zero


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path):
    folder = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump_py2_style(folder / "data_batch_3", {b"data": _Payload(marker), b"labels": []})
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    text = one_line(exc)
    assert str(folder / "data_batch_3") in text and "system" in text and "refused" in text
    assert not marker.exists()


# --- image folders -------------------------------------------------------------------------------


def test_imagefolder_split_colour_and_notes(folder: Path):
    bundle = load_dataset(f"imagefolder:{folder}")
    assert bundle.class_names == ["cat", "dog"] and bundle.in_chans == 3
    assert bundle.image_size == 16  # the shorter side of the most common size
    # 5 cat images → 1 validation; 6 dog images → 1 (20 % rounded).
    assert (len(bundle.train), len(bundle.val)) == (9, 2)
    assert bundle.val.labels.tolist() == [0, 1]
    assert {p for p, _ in bundle.train.samples}.isdisjoint(p for p, _ in bundle.val.samples)
    assert all(bundle.train[i][0].shape == (3, 16, 16) for i in range(len(bundle.train)))
    notes = "\n".join(bundle.notes)
    assert f"ignored hidden folder {folder / '.ipynb_checkpoints'}" in notes
    assert f"ignored non-image file {folder / 'dog' / 'labels.txt'}" in notes
    assert "RGBA → RGB (alpha composited onto white): 1 image" in notes
    assert "P → RGB (palette expanded to RGB): 1 image" in notes
    assert "split 9/2 stratified (20% of each class to validation), seed 0" in notes
    assert load_dataset(f"imagefolder:{folder}", seed=3).val.samples == bundle.val.samples
    gray = load_dataset(f"imagefolder:{folder}", in_chans=1, image_size=12)
    assert gray.train[0][0].shape == (1, 12, 12) and len(gray.mean) == 1
    assert "colour: RGB → L (RGB → luminance 0.299 R + 0.587 G + 0.114 B): 9 images" in gray.notes


def test_imagefolder_train_val_folders(tmp_path: Path):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                save_noise(tmp_path / split / name / f"{i}.png", mode="L", seed=i)
    bundle = load_dataset(f"imagefolder:{tmp_path}")
    assert (len(bundle.train), len(bundle.val), bundle.in_chans) == (6, 4, 1)
    assert all(p.parts[-3] == "val" for p, _ in bundle.val.samples)


def test_scan_reports_every_problem_with_paths(folder: Path):
    truncated_jpeg(folder / "dog" / "broken.jpg")
    (folder / "dog" / "garbage.png").write_bytes(b"not a png at all")
    (folder / "bird").mkdir()
    report = scan_imagefolder(folder)
    assert not report.ok
    assert [p.name for p, _ in report.unreadable] == ["broken.jpg", "garbage.png"]
    assert "truncated" in dict(report.unreadable)[folder / "dog" / "broken.jpg"]
    assert report.empty_classes == [folder / "bird"]
    assert folder / ".ipynb_checkpoints" in report.hidden
    assert folder / "cat" / ".DS_Store" in report.hidden
    assert report.non_images == [folder / "dog" / "labels.txt"]
    assert len(report.images) == 11
    assert any("broken.jpg" in line for line in report.lines())


def test_imagefolder_unreadable_image_is_named(folder: Path):
    truncated_jpeg(folder / "dog" / "broken.jpg")
    with pytest.raises(DataError) as exc:
        load_dataset(f"imagefolder:{folder}")
    assert str(folder / "dog" / "broken.jpg") in one_line(exc)


def test_imagefolder_empty_class_is_named(folder: Path):
    (folder / "bird" / ".ipynb_checkpoints").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_dataset(f"imagefolder:{folder}")
    assert f"class folder {folder / 'bird'} has no readable image" in one_line(exc)


def test_imagefolder_missing_folder(tmp_path: Path):
    with pytest.raises(DataError) as exc:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    assert str(tmp_path / "nope") in one_line(exc)


# --- the colour policy ---------------------------------------------------------------------------


def test_colour_policy_per_mode():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[0, 0, 3] = 255, 255  # one opaque red pixel, the rest transparent
    x = pil_to_tensor(Image.fromarray(rgba, "RGBA"), 3)
    assert x[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and x[:, 1, 1].tolist() == [1.0, 1.0, 1.0]
    deep = Image.fromarray(np.array([[0, 65535], [32768, 1000]], dtype=np.uint16))
    assert deep.mode.startswith("I;16") or deep.mode == "I"
    np.testing.assert_allclose(pil_to_tensor(deep, 1)[0, 0].numpy(), [0.0, 1.0])
    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    pil_gray = np.asarray(rgb.convert("L"), dtype=np.float32) / 255
    assert np.abs(pil_to_tensor(rgb, 1)[0].numpy() - pil_gray).max() <= 1 / 255
    cmyk = pil_to_tensor(rgb.convert("CMYK"), 3)
    assert cmyk.shape == (3, 8, 8)
    gray = pil_to_tensor(rgb.convert("LA"), 3)
    assert gray.shape == (3, 8, 8) and torch.equal(gray[0], gray[2])
    assert pil_to_tensor(Image.new("F", (3, 3), 7.5), 1).max().item() == 1.0


# --- loaders -------------------------------------------------------------------------------------


def _batches(dataset, workers: int, seed: int, epoch: int) -> list[torch.Tensor]:
    loader = make_loader(
        dataset, batch_size=64, shuffle=True, seed=seed, epoch=epoch, num_workers=workers
    )
    out = []
    for i, (x, y) in enumerate(loader):
        out += [x, y]
        if i == 3:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_same_seed_same_batches(workers: int):
    train = load_dataset("digits", augment="standard").train
    runs = []
    for noise in (0, 123):
        # With workers the main RNG does not matter; without, the caller seeds it (the trainer).
        torch.manual_seed(0 if workers == 0 else noise)
        runs.append(_batches(train, workers, seed=5, epoch=1))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    torch.manual_seed(0)
    other_epoch = _batches(train, workers, seed=5, epoch=2)
    assert not torch.equal(runs[0][1], other_epoch[1])  # a new order each epoch


def test_seeds_are_mixed_not_added():
    assert mix_seed(1, 0) != mix_seed(0, 1)
    assert len({mix_seed(0, 0, w) for w in range(4)}) == 4


# --- names and arguments -------------------------------------------------------------------------


def test_unknown_dataset_suggests_close_matches():
    with pytest.raises(DataError) as exc:
        load_dataset("minst")
    assert "did you mean mnist" in one_line(exc)
    with pytest.raises(DataError, match="cifar10, cifar100"):
        load_dataset("cifar")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"augment": "heavy"}, "unknown augment 'heavy': choose one of none, light, standard"),
        ({"in_chans": 2}, "in_chans must be 1 (gray) or 3 (RGB), got 2"),
        ({"image_size": 0}, "image_size must be a positive integer, got 0"),
        ({"image_size": True}, "image_size must be a positive integer, got True"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str):
    with pytest.raises(InvalidArgumentError) as exc:
        load_dataset("digits", **kwargs)
    assert message in one_line(exc)


# --- fast paths: same results as the plain torchvision pipeline ----------------------------------


@pytest.mark.parametrize(("chans", "size"), [(1, 8), (1, 32), (3, 16)])
def test_light_augment_equals_random_crop_then_rotation(chans: int, size: int):
    from cnnzoo.data.transforms import ShiftRotate

    pad = max(1, size // 8)
    reference = v2.Compose(
        [
            v2.RandomCrop(size, padding=pad),
            v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR),
        ]
    )
    fast = ShiftRotate(pad, 10)
    for seed in range(50):
        x = torch.rand(chans, size, size)
        torch.manual_seed(seed)
        expected, after_reference = reference(x), torch.rand(())
        torch.manual_seed(seed)
        got, after_fast = fast(x), torch.rand(())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert after_fast == after_reference  # the same draws from the global generator


def test_prepared_images_equal_the_per_image_prefix():
    bundle = load_dataset("digits", image_size=32, in_chans=3)
    raw = load_dataset("digits")  # native 1×8×8, nothing prepared
    per_image = bundle.preprocessing.transform()  # what predict does to one image
    assert bundle.val.images.shape == (len(raw.val), 3, 32, 32)
    for i in (0, 17, 359):
        expected = per_image(raw.val.images[i].float())
        torch.testing.assert_close(bundle.val[i][0], expected, rtol=0, atol=1e-5)


# --- the preparation pretrained weights ask for ---------------------------------------------


def _weights_preprocessing(chans: int, resize: int | None, crop: int, mean: float, std: float):
    from cnnzoo.weights import Preprocessing

    return Preprocessing(
        input_size=(chans, crop, crop), resize=resize, crop=crop if resize else None,
        interpolation="bicubic", mean=(mean,) * chans, std=(std,) * chans,
        channel_order="RGB" if chans == 3 else "L", class_names=None, source="test",
    )  # fmt: skip


def test_weights_preprocessing_resizes_crops_and_normalises_like_torchvision():
    pre = _weights_preprocessing(3, resize=40, crop=32, mean=0.4, std=0.3)
    bundle = load_dataset("digits", preprocessing=pre)
    assert (bundle.in_chans, bundle.image_size, bundle.mean, bundle.std) == (
        3,
        32,
        pre.mean,
        pre.std,
    )
    digits = load_digits()
    raw = load_dataset("digits")  # the same split, native: un-normalise to get the source image
    image = unnormalise(raw.val[5][0], raw)
    expected = v2.Compose([
        v2.Resize(40, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(32), v2.Normalize(pre.mean, pre.std),
    ])(image.expand(3, 8, 8))  # fmt: skip
    torch.testing.assert_close(bundle.val[5][0], expected, atol=1e-5, rtol=0)
    assert bundle.val[5][1] == raw.val[5][1] and digits.images.shape[1:] == (8, 8)
    assert any(
        n.startswith("preprocessing of the weights: resize 40 (bicubic)") for n in bundle.notes
    )


def test_weights_preprocessing_on_an_image_folder(folder: Path):
    pre = _weights_preprocessing(1, resize=20, crop=12, mean=0.5, std=0.25)
    bundle = load_dataset(f"imagefolder:{folder}", preprocessing=pre)
    path, _ = bundle.val.samples[0]
    with Image.open(path) as img:
        gray = pil_to_tensor(img, 1)
    expected = v2.Compose([
        v2.Resize(20, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(12),
    ])(gray)  # fmt: skip
    torch.testing.assert_close(bundle.val[0][0], (expected - 0.5) / 0.25, atol=1e-5, rtol=0)


def test_with_normalization_changes_only_the_statistics():
    bundle = load_dataset("digits", image_size=16)
    other = bundle.with_normalization((0.2,), (0.7,), "the weights")
    x, y = bundle.val[3]
    torch.testing.assert_close(other.val[3][0], (unnormalise(x, bundle) - 0.2) / 0.7)
    assert other.val[3][1] == y and other.train.images is bundle.train.images
    assert bundle.val[3][0].equal(x)  # the original bundle is unchanged
    assert other.notes[-1] == "normalised as the weights: mean (0.200), std (0.700)"
    with pytest.raises(InvalidArgumentError, match="3 channels, the data 1"):
        bundle.with_normalization((0.5,) * 3, (0.5,) * 3, "the weights")


def test_make_loader_tells_the_sampler_the_callers_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(20))
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=2, rank=1, seed=7)
    loader = make_loader(data, batch_size=4, shuffle=True, seed=7, epoch=3, sampler=sampler)
    assert sampler.epoch == 3  # set here: the trainer passes 1-based epochs and no set_epoch
    reference = torch.utils.data.DistributedSampler(data, num_replicas=2, rank=1, seed=7)
    reference.set_epoch(3)
    assert [int(i) for (batch,) in loader for i in batch] == list(reference)
    assert "0-based" not in make_loader.__doc__  # the trainer counts epochs from 1


# --- the bundle's preprocessing is its validation transform ---------------------------------


def test_the_bundles_preprocessing_prepares_every_validation_image(folder: Path):
    bundle = load_dataset(f"imagefolder:{folder}", image_size=12, in_chans=3)
    pre = bundle.preprocessing
    assert (pre.input_size, pre.resize, pre.crop, pre.interpolation) == ((3, 12, 12), 12, 12,
                                                                         "bilinear")  # fmt: skip
    assert (pre.mean, pre.std, pre.dataset) == (bundle.mean, bundle.std, f"imagefolder:{folder}")
    for i, (path, _) in enumerate(bundle.val.samples):
        with Image.open(path) as img:
            by_pil = pre.prepare(img)
            raw = pil_to_tensor(img, 3)
        torch.testing.assert_close(by_pil, bundle.val[i][0], rtol=0, atol=0)
        # by hand: shorter side to 12 (antialiased bilinear), centre crop, normalise
        ref = v2.CenterCrop(12)(v2.Resize(12, antialias=True)(raw))
        ref = (ref - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
        torch.testing.assert_close(by_pil, ref, rtol=0, atol=1e-5)
    uint8 = (pil_to_tensor(Image.open(bundle.val.samples[0][0]), 3) * 255).round().byte()
    torch.testing.assert_close(pre.prepare(uint8), bundle.val[0][0], rtol=0, atol=1e-5)


def test_renormalised_bundles_carry_the_new_statistics_in_their_preprocessing():
    bundle = load_dataset("digits", image_size=16).with_normalization((0.2,), (0.7,), "weights")
    pre = bundle.preprocessing
    assert (pre.mean, pre.std, pre.resize) == ((0.2,), (0.7,), None)
    assert pre.source == "the training split of digits, normalised as weights"
    raw = load_dataset("digits")
    x = unnormalise(raw.val[9][0], raw)  # the 8×8 image in [0, 1]
    torch.testing.assert_close(pre.prepare(x), bundle.val[9][0], rtol=0, atol=1e-6)
