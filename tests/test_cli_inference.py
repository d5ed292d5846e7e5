"""`cnnzoo predict`, `cnnzoo eval` and `cnnzoo summary --weights` end to end, from a model
trained here on the built-in digits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.weights import load_weights


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "lenet5"
    assert main(["train", "--model", "lenet5", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Digits from the validation split, saved in several modes, and one damaged file."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("images")
    digits = load_digits()
    gray = (digits.images[0] * 255 / 16).astype(np.uint8)  # a 0
    big = Image.fromarray(gray).resize((48, 48), Image.Resampling.NEAREST)
    files = {
        "L.png": big,
        "RGB.jpg": big.convert("RGB"),
        "RGBA.png": big.convert("RGBA"),
        "P.png": big.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE),
    }
    paths = {}
    for name, img in files.items():
        paths[name] = folder / name
        img.save(paths[name])
    paths["broken.png"] = folder / "broken.png"
    paths["broken.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return paths


def test_predict_every_mode_and_a_damaged_file(capsys, trained, images):
    files = [str(p) for p in images.values()]
    code, out, err = run(capsys, "predict", "--weights", str(trained / "model.safetensors"),
                         *files, "--topk", "3")  # fmt: skip
    assert code == 2  # one file failed; the others are still predicted
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "error:" in line]
    assert len(failures) == 1 and str(images["broken.png"]) in failures[0]
    for name in ("L.png", "RGB.jpg", "RGBA.png", "P.png"):
        assert str(images[name]) in out
    assert "preprocessing: colour policy to 1 gray channel" in out
    assert "lenet5: 10 tensors loaded (strict)" in err  # the load report


def test_predict_json_matches_the_model(capsys, trained, images):
    weights = trained / "model.safetensors"
    code, out, _ = run(capsys, "predict", "--weights", str(weights), str(images["L.png"]),
                       "--json")  # fmt: skip
    assert code == 0
    result = json.loads(out)  # stdout is nothing but JSON
    top = result["predictions"][0]["top"]
    assert len(top) == 5 and result["failures"] == []
    # independently: the same image prepared by hand (resize to 32, normalise), through the model
    model = load_weights(None, weights)[0]
    pre = model.pretrained_cfg
    x = torch.from_numpy(np.asarray(Image.open(images["L.png"]), dtype=np.float32) / 255)
    x = torch.nn.functional.interpolate(x[None, None], size=(32, 32), mode="bilinear",
                                        antialias=True, align_corners=False)  # fmt: skip
    x = (x - pre.mean[0]) / pre.std[0]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert top[0]["index"] == int(probs.argmax())
    assert top[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert top[0]["name"] == pre.class_names[top[0]["index"]]


def test_eval_equals_an_independent_count(capsys, trained, tmp_path):
    weights = trained / "model.safetensors"
    code, out, _ = run(capsys, "eval", "--weights", str(weights), "--dataset", "digits",
                       "--json", "--out", str(tmp_path))  # fmt: skip
    assert code == 0
    result = json.loads(out)
    model = load_weights(None, weights)[0]
    data = load_dataset("digits", image_size=32)  # what training validated on
    x = torch.stack([data.val[i][0] for i in range(len(data.val))])
    with torch.no_grad():
        predicted = model(x).argmax(1)
    expected = (predicted == data.val.labels).float().mean().item()
    assert result["images"] == 360 and result["top1"] == pytest.approx(expected, abs=1e-9)
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["top1"] == pytest.approx(last["val_acc"], abs=1e-9)  # as training measured
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    code, out, _ = run(capsys, "eval", "--weights", str(weights), "--dataset", "digits")
    assert code == 0 and "top-1 accuracy" in out and "top-5 accuracy" in out


def test_checkpoints_carry_the_preprocessing_of_the_export(trained):
    export = load_weights(None, trained / "model.safetensors")[0].pretrained_cfg
    best = load_weights(None, trained / "best.pt")[0].pretrained_cfg
    assert (best.mean, best.std, best.input_size, best.class_names) == (
        export.mean, export.std, export.input_size, export.class_names,
    )  # fmt: skip
    assert best.source == "cnnzoo checkpoint, trained on digits"
    assert replace(best, source=export.source) == export  # every field, the resize rule too
    # what the training run validated on, and what predict and eval now prepare with
    assert export == replace(load_dataset("digits", image_size=32).preprocessing,
                             source=export.source)  # fmt: skip
    assert (export.resize, export.crop, export.interpolation) == (None, None, "bilinear")


def test_summary_of_a_weight_file(capsys, trained):
    code, out, _ = run(capsys, "summary", "--weights", str(trained / "best.pt"), "--json")
    assert code == 0
    result = json.loads(out)
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["layers"][0]["output_shape"] == [1, 6, 28, 28]  # the weights' 1×32×32 input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--topk", "0", "x.png"], "--topk must be 1 or more"),
        (["eval", "--dataset", "imagefolder:/nonexistent"], "/nonexistent"),
        (["summary", "--num-classes", "3"], "--num-classes does not go with --weights"),
    ],
)
def test_bad_inference_arguments_give_one_line(capsys, trained, argv, message):
    weights = trained / "model.safetensors"
    code, out, err = run(capsys, *argv[:1], "--weights", str(weights), *argv[1:])
    assert code == 2 and out == ""
    # stderr holds the error line and at most the load report of the weights read before it,
    # nothing else (no traceback, no warning).
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(f"cnnzoo {argv[0]}: error: ")]
    assert len(errors) == 1 and message in errors[0], err
    report = f"weights {weights} (cnnzoo export) → lenet5: 10 tensors loaded (strict)"
    assert set(lines) - set(errors) <= {report}, err
    assert "Traceback" not in err


def test_summary_needs_a_model_or_weights(capsys):
    code, _, err = run(capsys, "summary")
    assert code == 2 and "give a model name" in err


def test_a_file_that_does_not_name_its_model_needs_model(capsys, trained, tmp_path):
    state = load_weights(None, trained / "model.safetensors")[0].state_dict()
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    code, _, err = run(capsys, "eval", "--weights", str(path), "--dataset", "digits")
    assert code == 2 and "does not name its architecture" in err and "--model" in err
    code, out, _ = run(capsys, "eval", "--weights", str(path), "--model", "lenet5",
                       "--dataset", "digits")  # fmt: skip
    assert code == 0 and "top-1 accuracy" in out


def test_eval_refuses_data_with_other_classes(capsys, trained, tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / label / f"{i}.png")
    code, _, err = run(capsys, "eval", "--weights", str(trained / "model.safetensors"),
                       "--dataset", f"imagefolder:{tmp_path}")  # fmt: skip
    assert code == 2 and "the weights have 10 classes" in err and "has 2" in err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_checks_the_file_on_random_and_real_images(capsys, trained, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    weights = trained / "model.safetensors"
    code, text, _ = run(capsys, "export", "--weights", str(weights), "--format", fmt,
                        "--out", str(out), "--json")  # fmt: skip
    assert code == 0
    report = json.loads(text)
    names = [c["name"] for c in report["checks"]]
    assert any("real" in n for n in names) and any("random" in n for n in names)
    # independently: run the file on validation digits and compare with the model
    model = load_weights(None, weights)[0]
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    x = torch.stack([data.val[i][0] for i in range(8)])
    with torch.no_grad():
        expected = model(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    else:
        got = torch.jit.load(str(out))(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_export_without_the_onnx_extra_says_what_to_install(capsys, trained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    code, _, err = run(capsys, "export", "--weights", str(trained / "model.safetensors"),
                       "--format", "onnx", "--out", str(tmp_path / "m.onnx"))  # fmt: skip
    assert code == 2 and "pip install 'cnnzoo[onnx]'" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_eval_with_a_fast_backend_gives_the_same_accuracy(capsys, trained):
    weights = str(trained / "model.safetensors")
    code, out, _ = run(capsys, "eval", "--weights", weights, "--dataset", "digits", "--json")
    assert code == 0
    eager = json.loads(out)
    code, out, err = run(capsys, "eval", "--weights", weights, "--dataset", "digits", "--json",
                         "--backend", "onnxruntime", "--threads", "1")  # fmt: skip
    assert code == 0 and "backend onnxruntime" in err
    fast = json.loads(out)
    assert abs(fast["top1"] - eager["top1"]) <= 1 / 360  # at most one near-tie may flip


def test_eval_int8_reports_the_accuracy_change(capsys, trained, monkeypatch):
    import cnnzoo.inference

    # Keep the int8 runner the command builds, to evaluate it here independently of the CLI.
    runners = []
    build = cnnzoo.inference.optimize

    def keep(*args, **kwargs):
        runners.append(build(*args, **kwargs))
        return runners[-1]

    monkeypatch.setattr(cnnzoo.inference, "optimize", keep)
    weights = trained / "model.safetensors"
    code, out, _ = run(capsys, "eval", "--weights", str(weights), "--dataset", "digits",
                       "--backend", "int8", "--threads", "1")  # fmt: skip
    assert code == 0
    (int8,) = runners
    line = next(ln for ln in out.splitlines() if "int8 top-1" in ln)

    # By hand: both runners on the 360 validation images, prepared as the weights ask.
    model = load_weights(None, weights)[0].eval()
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    x = torch.stack([data.val[i][0] for i in range(len(data.val))])
    with torch.no_grad():
        fp32_top, int8_top = model(x).argmax(1), int8(x).argmax(1)
    int8_right = int((int8_top == data.val.labels).sum())
    fp32_acc, int8_acc = (fp32_top == data.val.labels).float().mean().item(), int8_right / 360
    agree = (fp32_top == int8_top).float().mean().item()
    expected = (
        f"int8 top-1 {100 * int8_acc:.2f}% vs fp32 {100 * fp32_acc:.2f}% "
        f"({100 * (int8_acc - fp32_acc):+.2f} points); top-1 agreement with fp32 {100 * agree:.2f}%"
    )
    assert line == f"note: {expected}"
    assert f"top-1 accuracy: {100 * int8_acc:.2f}% ({int8_right}/360)" in out  # the int8 runner's


def test_predict_int8_needs_calibration_images(capsys, trained, images):
    code, _, err = run(capsys, "predict", "--weights", str(trained / "model.safetensors"),
                       str(images["L.png"]), "--backend", "int8")  # fmt: skip
    assert code == 2 and "--calibrate" in err


def test_predict_on_a_folder_says_that_nothing_was_predicted(capsys, trained, images, tmp_path):
    weights = str(trained / "model.safetensors")
    code, out, err = run(capsys, "predict", "--weights", weights, str(tmp_path))
    assert code == 2 and "is a folder" in err
    assert err.splitlines()[-1] == "cnnzoo predict: the file could not be read."
    assert "predicted above" not in err and "Traceback" not in err
    code, out, err = run(
        capsys, "predict", "--weights", weights, str(tmp_path), str(images["L.png"])
    )
    assert code == 2 and str(images["L.png"]) in out
    assert err.splitlines()[-1] == (
        "cnnzoo predict: 1 of 2 files could not be read; the other one is predicted above."
    )


def test_export_checks_weights_trained_on_an_image_folder_on_that_folder(capsys, tmp_path):
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import _metadata, _save_weights

    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(40, 30), (30, 52), (36, 36), (64, 33), (45, 45)]):
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(tmp_path / "pets" / name / f"{i}.png")
    dataset = f"imagefolder:{tmp_path / 'pets'}"
    data = load_dataset(dataset, image_size=32)
    weights = tmp_path / "model.safetensors"
    model = cnnzoo.create_model("lenet5", num_classes=2, in_chans=3)
    _save_weights(model, weights, _metadata(TrainConfig(model="lenet5", dataset=dataset), data, 32))
    code, text, _ = run(capsys, "export", "--weights", str(weights), "--format", "torchscript",
                        "--out", str(tmp_path / "m.pt"), "--json")  # fmt: skip
    assert code == 0
    report = json.loads(text)
    assert report["real_images"].startswith(f"2 validation images of {dataset}, prepared as")
    assert report["checks"][-1]["name"] == "real images" and report["checks"][-1]["batch"] == 2
