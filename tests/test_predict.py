"""Prediction from image files: what reaches the model, the top-k, and the files that fail.

Every image is written by the test with PIL; the tensor the model receives is compared with an
independent computation (numpy for the colour rules, torchvision v2 for resize and crop).
"""

from __future__ import annotations

import json
import os
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.io import decode_image, read_file
from torchvision.transforms import v2

import cnnzoo
from cnnzoo.errors import CnnzooError, DataError, InvalidArgumentError
from cnnzoo.predict import describe_transform, image_transform, predict_files, read_image
from cnnzoo.weights import Preprocessing, load_weights

SIDE = 32
MEAN3, STD3 = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
NAMES = tuple(f"digit-{i}" for i in range(10))


def _pre(chans: int = 3, *, resize=None, crop=None, interpolation="bilinear", names=NAMES):
    mean, std = (MEAN3, STD3) if chans == 3 else ((0.45,), (0.2,))
    return Preprocessing(
        input_size=(chans, SIDE, SIDE),
        resize=resize,
        crop=crop,
        interpolation=interpolation,
        mean=mean,
        std=std,
        channel_order="RGB" if chans == 3 else "L",
        class_names=names,
        source="test",
    )


def _model(chans: int = 3, **pre_kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=chans)
    model.pretrained_cfg = _pre(chans, **pre_kwargs)
    return model


class _Inputs:
    """Records every batch the model receives."""

    def __init__(self, model: nn.Module) -> None:
        self.batches: list[torch.Tensor] = []
        self.modes: list[bool] = []  # model.training at each call
        model.register_forward_pre_hook(self._record)

    def _record(self, model: nn.Module, args: tuple) -> None:
        self.batches.append(args[0].clone())
        self.modes.append(model.training)

    @property
    def all(self) -> torch.Tensor:
        return torch.cat(self.batches)


def _normalised(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """(H, W, C) float64 in [0, 1] → normalised (C, H, W) float32, by hand."""
    x = (pixels - np.array(mean)) / np.array(std)
    return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


def _one_line(err: CnnzooError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


# --- what the model receives, per PIL mode --------------------------------------------------


def _images(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Files of every mode, each with its expected RGB pixels (H, W, 3) in [0, 1], by hand."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    alpha = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    alpha[0, :] = 0  # fully transparent pixels (colour arbitrary) and fully opaque ones
    alpha[1, :] = 255
    out: dict[str, tuple[Path, np.ndarray]] = {}

    path = folder / "gray.png"
    Image.fromarray(gray, "L").save(path)
    out["L"] = (path, np.repeat(gray[..., None] / 255.0, 3, axis=2))

    path = folder / "colour.png"
    Image.fromarray(rgb, "RGB").save(path)
    out["RGB"] = (path, rgb / 255.0)

    path = folder / "photo.jpg"
    Image.fromarray(rgb, "RGB").save(path, quality=90)
    with Image.open(path) as decoded:  # JPEG is lossy: the reference is what PIL decodes
        out["JPEG"] = (path, np.asarray(decoded.convert("RGB")) / 255.0)

    path = folder / "alpha.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    a = alpha[..., None] / 255.0
    out["RGBA"] = (path, rgb / 255.0 * a + (1 - a))  # composited onto white

    indices = rng.integers(0, 16, (SIDE, SIDE), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    palette_rgb = palette[indices] / 255.0  # the palette lookup by hand
    path = folder / "palette.png"
    img = Image.fromarray(indices, "P")
    img.putpalette(palette.flatten().tolist())
    img.save(path)
    out["P"] = (path, palette_rgb)

    path = folder / "palette_transparent.png"
    img.save(path, transparency=3)  # colour index 3 is transparent
    clear = (indices == 3)[..., None]
    assert clear.any()
    out["P+transparency"] = (path, np.where(clear, 1.0, palette_rgb))
    return out


@pytest.mark.parametrize("chans", [3, 1])
def test_each_mode_reaches_the_model_as_computed_by_hand(tmp_path, chans):
    images = _images(tmp_path)
    model = _model(chans)
    inputs = _Inputs(model)
    result = predict_files(model, [p for p, _ in images.values()], topk=3)

    assert result.failures == []
    assert [p.path for p in result.predictions] == [str(p) for p, _ in images.values()]
    expected = []
    for pixels in (px for _, px in images.values()):
        if chans == 1:
            pixels = (pixels @ np.array([0.299, 0.587, 0.114]))[..., None]  # ITU-R 601 luma
        mean, std = model.pretrained_cfg.mean, model.pretrained_cfg.std
        expected.append(_normalised(pixels, mean, std))
    _assert_close(inputs.all, torch.stack(expected))

    modes = [p.mode for p in result.predictions]
    assert modes == ["L", "RGB", "RGB", "RGBA", "P", "P+transparency"]
    assert all((p.width, p.height) == (SIDE, SIDE) for p in result.predictions)
    rules = {p.mode: p.colour_rule for p in result.predictions}
    assert "alpha composited onto white" in rules["RGBA"]
    assert "alpha composited onto white" in rules["P+transparency"]
    assert "palette expanded to RGB" in rules["P"]
    if chans == 3:
        assert rules["RGB"] is None and "gray repeated to RGB" in rules["L"]
    else:
        assert rules["L"] is None and "luminance" in rules["RGB"]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resize_then_crop_equals_torchvision(tmp_path, interpolation):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)  # H 45, W 60: not square
    path = tmp_path / "wide.png"
    Image.fromarray(rgb).save(path)
    model = _model(3, resize=36, crop=SIDE, interpolation=interpolation)
    inputs = _Inputs(model)
    result = predict_files(model, [path])

    mode = v2.InterpolationMode(interpolation)
    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    ref = v2.CenterCrop(SIDE)(v2.Resize(36, interpolation=mode, antialias=True)(ref))
    ref = (ref - torch.tensor(MEAN3).view(3, 1, 1)) / torch.tensor(STD3).view(3, 1, 1)
    _assert_close(inputs.all, ref[None])
    assert (result.predictions[0].width, result.predictions[0].height) == (60, 45)
    described = describe_transform(model.pretrained_cfg)
    assert f"shorter side to 36 ({interpolation}" in described and "centre crop 32×32" in described


def test_without_resize_the_image_is_resized_straight_to_the_input_size(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (20, 50, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    Image.fromarray(rgb).save(path)
    model = _model(3)
    inputs = _Inputs(model)
    predict_files(model, [path])

    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    ref = v2.Resize((SIDE, SIDE), antialias=True)(ref)  # aspect ratio not kept
    ref = (ref - torch.tensor(MEAN3).view(3, 1, 1)) / torch.tensor(STD3).view(3, 1, 1)
    _assert_close(inputs.all, ref[None])
    assert "resize to 32×32 unless already so (bilinear" in describe_transform(model.pretrained_cfg)


def test_image_transform_refuses_an_unknown_interpolation():
    with pytest.raises(InvalidArgumentError, match="'nearest'") as info:
        image_transform(_pre(3, interpolation="nearest"))
    _one_line(info.value)


# --- results --------------------------------------------------------------------------------


def _png(path: Path, seed: int) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_topk_is_the_softmax_of_the_logits_sorted_with_class_names(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", i) for i in range(5)]
    model = _model(3)
    inputs = _Inputs(model)
    result = predict_files(model, paths, topk=10, batch_size=2)

    assert len(inputs.batches) == 3  # batched: 2 + 2 + 1
    with torch.no_grad():
        probs = torch.softmax(model(inputs.all), dim=1)  # independent forward of the same batch
    for p, row in zip(result.predictions, probs, strict=True):
        got = torch.tensor([t.probability for t in p.top])
        order = [t.index for t in p.top]
        assert sorted(order) == list(range(10))
        assert torch.all(got[:-1] >= got[1:])  # most probable first
        assert abs(got.sum().item() - 1) < 1e-5
        _assert_close(got, row[order])
        assert [t.name for t in p.top] == [NAMES[i] for i in order]


def test_runs_in_eval_mode_and_restores_the_mode(tmp_path):
    model = _model(3)
    inputs = _Inputs(model)
    for training in (True, False):
        model.train(training)
        predict_files(model, [_png(tmp_path / "a.png", 0)])
        assert inputs.modes[-1] is False and model.training is training


def test_class_names_fall_back_to_class_n(tmp_path):
    model = _model(3, names=None)
    result = predict_files(model, [_png(tmp_path / "a.png", 0)], topk=3)
    assert [t.name for t in result.predictions[0].top] == [
        f"class {t.index}" for t in result.predictions[0].top
    ]
    assert any("class N" in note for note in result.notes)


def test_topk_is_clipped_to_the_classes_and_must_be_positive(tmp_path):
    path = _png(tmp_path / "a.png", 0)
    model = _model(3)
    result = predict_files(model, [path], topk=50)
    assert result.topk == 10 and len(result.predictions[0].top) == 10
    assert any("top-50" in note for note in result.notes)
    none_read = predict_files(model, [tmp_path / "gone.png"], topk=50)
    assert none_read.topk == 10 and len(none_read.failures) == 1  # known without a forward
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidArgumentError, match="topk") as info:
            predict_files(model, [path], topk=bad)
        _one_line(info.value)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        predict_files(model, [path], batch_size=0)


def test_a_model_without_preprocessing_is_refused(tmp_path):
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=3)
    with pytest.raises(InvalidArgumentError, match="pretrained_cfg") as info:
        predict_files(model, [_png(tmp_path / "a.png", 0)])
    _one_line(info.value)


def test_a_model_returning_a_named_tuple_gives_its_logits(tmp_path):
    Outputs = namedtuple("Outputs", ["logits", "aux"])

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return Outputs(self.inner(x), torch.zeros(len(x), 3))

    inner = _model(3)
    wrapped = Wrapped(inner)
    wrapped.pretrained_cfg = inner.pretrained_cfg
    paths = [_png(tmp_path / "a.png", 0)]
    a = predict_files(wrapped, paths).to_dict()
    b = predict_files(inner, paths).to_dict()
    assert a == b


# --- files that cannot be read --------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, Path]:
    noise = folder / "noise.png"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    full = folder / "full.jpg"
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(full, quality=95)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    text = folder / "notes.png"
    text.write_text("not an image\n")
    (folder / "a_folder").mkdir()
    return {
        "noise": noise,
        "truncated": truncated,
        "text": text,
        "missing": folder / "missing.png",
        "folder": folder / "a_folder",
    }


def test_read_image_raises_one_line_naming_the_file(tmp_path):
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as info:
            read_image(path)
        message = _one_line(info.value)
        assert str(path) in message, what
    with pytest.raises(DataError, match="truncated"):
        read_image(tmp_path / "truncated.jpg")


def test_read_image_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    path = _png(tmp_path / "big.png", 0)  # 32 × 32 = 1,024 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # refused above twice this
    with pytest.raises(DataError, match="decompression bomb") as info:
        read_image(path)
    assert str(path) in _one_line(info.value)


# torchvision's image decoding is deprecated in favour of torchcodec, which is not a dependency.
@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_read_image_decodes_fully_and_keeps_the_image_usable(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    png = tmp_path / "noise.png"  # noise: ~150 kB of compressed data, several PNG data chunks
    Image.fromarray(rgb).save(png)
    jpg = tmp_path / "progressive.jpg"  # many scans, each refining the whole picture
    Image.fromarray(rgb).save(jpg, quality=90, progressive=True)
    # An independent decoder for the lossy file: torchvision's own (libjpeg-turbo), not PIL.
    reference = decode_image(read_file(str(jpg))).permute(1, 2, 0).numpy().astype(int)
    images = {path: read_image(path) for path in (png, jpg)}
    for path in images:
        path.write_bytes(b"")  # the pixels must be in memory already, not read later
    assert images[png].size == (256, 192) and np.array_equal(np.asarray(images[png]), rgb)
    pixels = np.asarray(images[jpg]).astype(int)
    assert pixels.shape == reference.shape and np.abs(pixels - reference).max() <= 1


def test_bad_files_are_reported_and_the_others_still_predicted(tmp_path):
    bad = _bad_files(tmp_path)
    good = [_png(tmp_path / f"good{i}.png", i) for i in range(3)]
    paths = [good[0], *bad.values(), good[1], good[2]]
    model = _model(3)
    result = predict_files(model, paths, topk=2, batch_size=2)

    assert [p.path for p in result.predictions] == [str(p) for p in good]
    assert [path for path, _ in result.failures] == [str(p) for p in bad.values()]
    for path, message in result.failures:
        assert path in message and "\n" not in message
    alone = predict_files(model, good, topk=2)  # the failures change nothing for the others
    assert alone.to_dict()["predictions"] == result.to_dict()["predictions"]
    n = len(bad) + 3
    assert result.failure_summary() == (
        f"{len(bad)} of {n} files could not be read; the other 3 are predicted above"
    )
    assert alone.failure_summary() is None


def test_the_failure_summary_counts_what_was_predicted(tmp_path):
    model = _model(3)
    good, gone = _png(tmp_path / "a.png", 0), tmp_path / "gone.png"
    summary = [
        predict_files(model, paths).failure_summary()
        for paths in ([gone], [gone, tmp_path], [good, gone], [good, gone, gone])
    ]
    assert summary == [
        "the file could not be read",
        "none of the 2 files could be read",
        "1 of 2 files could not be read; the other one is predicted above",
        "2 of 3 files could not be read; the other one is predicted above",
    ]


def test_json_shape(tmp_path):
    model = _model(3)
    result = predict_files(model, [_png(tmp_path / "a.png", 0), tmp_path / "gone.png"], topk=2)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"topk", "preprocessing", "predictions", "failures", "notes"}
    (pred,) = data["predictions"]
    assert set(pred) == {"path", "width", "height", "mode", "colour_rule", "top"}
    assert set(pred["top"][0]) == {"index", "name", "probability"}
    assert data["failures"][0]["path"] == str(tmp_path / "gone.png")
    lines = result.lines()
    assert lines[0].startswith(str(tmp_path / "a.png")) and len(lines) == 3


# --- through a real weights file ------------------------------------------------------------


def test_predict_with_weights_loaded_from_a_saved_file(tmp_path):
    from cnnzoo.training.trainer import _save_weights

    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=4, in_chans=1)
    names = ["north", "east", "south", "west"]
    metadata = {
        "model": "lenet5",
        "num_classes": "4",
        "in_chans": "1",
        "image_size": str(SIDE),
        "mean": json.dumps([0.3]),
        "std": json.dumps([0.6]),
        "class_names": json.dumps(names),
        "dataset": "test",
    }
    weights = tmp_path / "weights.safetensors"
    _save_weights(model, weights, metadata)
    loaded, _ = load_weights(None, weights)

    rgb = np.random.default_rng(3).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    image = tmp_path / "img.png"
    Image.fromarray(rgb).save(image)
    inputs = _Inputs(loaded)
    result = predict_files(loaded, [os.fspath(image)], topk=9)

    luma = (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])
    _assert_close(inputs.all, _normalised(luma[..., None], (0.3,), (0.6,))[None])
    with torch.no_grad():
        probs = torch.softmax(model.eval()(inputs.all), dim=1)[0]
    top = result.predictions[0].top
    assert result.topk == 4 and len(top) == 4
    assert top[0].index == int(probs.argmax()) and top[0].name == names[top[0].index]
    assert abs(top[0].probability - probs.max().item()) < 1e-5


# --- one preprocessing: predict prepares as training validated --------------------------------


def _mixed_folder(root: Path) -> Path:
    """An image folder whose images differ in size and aspect (the case that needs a crop)."""
    rng = np.random.default_rng(7)
    sizes = [(40, 30), (30, 52), (36, 36), (64, 33), (45, 45)]
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            rgb[..., c] //= 2  # something to tell the classes apart
            Image.fromarray(rgb).save(root / name / f"{i}.png")
    return root


def _trained_weights(tmp_path: Path, dataset: str, data, *, checkpoint: bool = False) -> Path:
    """A weights file as the trainer writes it (its own metadata function), untrained."""
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import _metadata, _save_weights

    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=data.num_classes, in_chans=data.in_chans)
    meta = _metadata(TrainConfig(model="lenet5", dataset=dataset), data, data.image_size)
    if checkpoint:
        path = tmp_path / "last.pt"
        torch.save({"model_name": "lenet5", "model": model.state_dict(), "metadata": meta}, path)
    else:
        path = tmp_path / "model.safetensors"
        _save_weights(model, path, meta)
    return path


@pytest.mark.parametrize("checkpoint", [False, True], ids=["safetensors", "checkpoint"])
def test_predict_prepares_an_image_folder_image_as_its_validation_split(tmp_path, checkpoint):
    from cnnzoo.data import load_dataset

    dataset = f"imagefolder:{_mixed_folder(tmp_path / 'pets')}"
    data = load_dataset(dataset, image_size=SIDE)  # what training validates on
    loaded, _ = load_weights(None, _trained_weights(tmp_path, dataset, data, checkpoint=checkpoint))
    pre = loaded.pretrained_cfg
    assert (pre.resize, pre.crop, pre.interpolation) == (SIDE, SIDE, "bilinear")
    assert pre.dataset == dataset and pre == replace(data.preprocessing, source=pre.source)

    inputs = _Inputs(loaded)
    paths = [path for path, _ in data.val.samples]
    predict_files(loaded, paths, batch_size=len(paths))
    expected = torch.stack([data.val[i][0] for i in range(len(paths))])
    assert {Image.open(p).size for p in paths} != {(SIDE, SIDE)}  # really resized and cropped
    _assert_close(inputs.all, expected)
    for i, path in enumerate(paths):  # the public one-image form gives the same
        _assert_close(pre.prepare(Image.open(path)), expected[i])
    # by hand: shorter side to 32 (torchvision v2, antialiased), centre crop, normalise
    with Image.open(paths[0]) as img:
        raw = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1) / 255
    ref = v2.CenterCrop(SIDE)(v2.Resize(SIDE, antialias=True)(raw))
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    _assert_close(inputs.all[0], (ref - mean) / std)


def test_an_image_folder_file_written_before_the_resize_rule_was_recorded(tmp_path):
    """Old exports have no resize/crop/interpolation: an image folder's was the crop."""
    from cnnzoo.data import load_dataset
    from cnnzoo.training.trainer import _save_weights

    dataset = f"imagefolder:{_mixed_folder(tmp_path / 'pets')}"
    data = load_dataset(dataset, image_size=SIDE)
    old = {  # every key the trainer wrote before, nothing more
        "model": "lenet5",
        "num_classes": "2",
        "in_chans": "3",
        "image_size": str(SIDE),
        "mean": json.dumps(list(data.mean)),
        "std": json.dumps(list(data.std)),
        "class_names": json.dumps(data.class_names),
        "dataset": dataset,
    }
    path = tmp_path / "old.safetensors"
    _save_weights(cnnzoo.create_model("lenet5", num_classes=2, in_chans=3), path, old)
    pre = load_weights(None, path)[0].pretrained_cfg
    assert (pre.resize, pre.crop, pre.interpolation) == (SIDE, SIDE, "bilinear")
    image = Image.open(data.val.samples[0][0])
    _assert_close(pre.prepare(image), data.val[0][0])


def test_weights_trained_on_digits_still_resize_straight_to_the_side(tmp_path):
    from cnnzoo.data import load_dataset

    data = load_dataset("digits", image_size=SIDE)
    pre = load_weights(None, _trained_weights(tmp_path, "digits", data))[0].pretrained_cfg
    assert (pre.resize, pre.crop, pre.dataset) == (None, None, "digits")
    raw = load_dataset("digits")  # native 8×8 in [0, 1] once un-normalised
    x = raw.val[4][0] * torch.tensor(raw.std).view(-1, 1, 1) + torch.tensor(raw.mean).view(-1, 1, 1)
    _assert_close(pre.prepare(x), data.val[4][0])


@pytest.mark.parametrize(
    ("field", "value"),
    [("resize", "0"), ("crop", '"x"'), ("interpolation", "nearest"), ("mean", "[0.5, 0.5]")],
)
def test_malformed_preprocessing_metadata_is_one_line(tmp_path, field, value):
    from cnnzoo.data import load_dataset
    from cnnzoo.errors import WeightsError
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import _metadata, _save_weights

    data = load_dataset("digits", image_size=SIDE)
    meta = _metadata(TrainConfig(model="lenet5", dataset="digits"), data, SIDE) | {field: value}
    path = tmp_path / "bad.safetensors"
    _save_weights(cnnzoo.create_model("lenet5", num_classes=10, in_chans=1), path, meta)
    with pytest.raises(WeightsError, match="incomplete cnnzoo metadata") as info:
        load_weights(None, path)
    assert str(path) in _one_line(info.value)


def test_an_assumed_preprocessing_says_so():
    described = describe_transform(_pre(3)).rsplit("[", 1)[1]
    assert described == "from test]"
    assumed = replace(_pre(3), source="assumed")
    assert describe_transform(assumed).endswith("[assumed: the file records no preprocessing]")
    assert assumed.describe().endswith("[assumed: the file records no preprocessing]")
    assert "from assumed" not in describe_transform(assumed) + assumed.describe()
