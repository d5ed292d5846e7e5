"""Export to ONNX and TorchScript: parity per family, the dynamic batch axis, the embedded
metadata, and the refusals (bad arguments, a failed check that must leave the old file).

Each parity test reopens the written file itself (onnxruntime / torch.jit.load, not through
cnnzoo's helpers) and compares it with the eager model at a batch size the export never saw.
BatchNorm statistics are randomised so that a folding mistake would show.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from cnnzoo import create_model, export, parity
from cnnzoo.errors import ExportError, InputSizeError, InvalidArgumentError, UnknownModelError
from cnnzoo.export import export_model, read_metadata
from cnnzoo.onnxrt import onnx_session, run_onnx
from cnnzoo.weights import Preprocessing
from tests.conftest import ONE_PER_FAMILY, randomise_bn

FORMATS = ("onnx", "torchscript")
# torch.jit.load warns that torch.jit is deprecated (docs/export.md says why we still offer it).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def _open(path: Path, fmt: str):
    """A function running the file, built from onnxruntime / torch.jit directly."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    return torch.jit.load(str(path))


def _assert_parity(got: torch.Tensor, ref: torch.Tensor) -> None:
    # DESIGN.md §4, different engines: 1e-4 · max(1, max |y|) and the same top-1.
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    assert torch.equal(got.argmax(1), ref.argmax(1))


# One model per family at a small input, with fewer classes where that makes the file smaller.
CASES = ONE_PER_FAMILY
# Over 2 s on a quiet 2-core machine (ONNX export runs torch.export, decompositions and the
# ONNX optimiser: 3-13 s for the deeper graphs; AlexNet's and VGG's files are 0.2-0.5 GB).
SLOW = {(n, "onnx") for n, _, _ in CASES if n not in ("lenet5", "mlp")} | {
    ("alexnet", "torchscript"),
    ("vgg11_bn", "torchscript"),
    ("densenet121", "torchscript"),
}


@pytest.mark.parametrize(
    ("name", "size", "options", "fmt"),
    [
        pytest.param(n, s, o, f, id=f"{n}-{f}", marks=[pytest.mark.slow] * ((n, f) in SLOW))
        for n, s, o in CASES
        for f in FORMATS
    ],
)
def test_export_matches_the_eager_model(name, size, options, fmt, tmp_path):
    model = randomise_bn(create_model(name, **options))
    model.train()  # export must use eval mode (GoogLeNet: logits only) and give the mode back
    path = tmp_path / f"{name}.{fmt}"
    report = export_model(model, path, fmt, input_size=size, model_name=name)
    assert model.training
    model.eval()

    assert path.is_file() and report.file_bytes == path.stat().st_size
    assert [c.batch for c in report.checks] == [1, 3]  # neither is the export batch (2)
    assert all(c.passed for c in report.checks)
    x = torch.randn(5, *size, generator=torch.Generator().manual_seed(42))
    with torch.no_grad():
        _assert_parity(_open(path, fmt)(x), model(x))
    if fmt == "onnx":
        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == ["images"]
        assert [o.name for o in graph.output] == ["logits"]  # GoogLeNet: no auxiliary outputs
        batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.HasField("dim_value")


def _digits(n: int) -> torch.Tensor:
    """``n`` real handwritten digits (scikit-learn's 8×8 set) resized and normalised for LeNet."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0
    images = nn.functional.interpolate(images, size=(32, 32), mode="bilinear")
    return (images - 0.5) / 0.5


PRE = Preprocessing(
    input_size=(1, 32, 32),
    resize=None,
    crop=None,
    interpolation="bilinear",
    mean=(0.5,),
    std=(0.5,),
    channel_order="L",
    class_names=tuple(f"digit {i}" for i in range(10)),
    source="test",
)


@pytest.fixture(scope="module", params=FORMATS)
def lenet_export(request, tmp_path_factory):
    """LeNet-5 with a pretrained_cfg, exported once per format with real images checked too."""
    model = randomise_bn(create_model("lenet5"))
    model.pretrained_cfg = PRE
    path = tmp_path_factory.mktemp("export") / f"lenet5.{request.param}"
    report = export_model(model, path, request.param, real_inputs=_digits(6), model_name="lenet5")
    return model, path, report


def test_the_input_size_comes_from_pretrained_cfg(lenet_export):
    _, _, report = lenet_export
    assert report.input_size == (1, 32, 32)
    assert report.model == "lenet5"


def test_real_inputs_are_checked_and_reported(lenet_export):
    _, _, report = lenet_export
    assert [(c.name, c.batch) for c in report.checks] == [
        ("random", 1),
        ("random", 3),
        ("real images", 6),
    ]
    lines = report.lines()
    assert len(lines) == 1 + len(report.checks)
    assert "real images, batch 6" in lines[-1]
    assert json.loads(json.dumps(report.to_dict()))["input_size"] == [1, 32, 32]


@pytest.mark.parametrize("batch", [1, 2, 7, 16])
def test_the_batch_axis_is_dynamic(lenet_export, batch):
    model, path, report = lenet_export
    x = _digits(16)[:batch]
    with torch.no_grad():
        _assert_parity(_open(path, report.format)(x), model(x))


def test_metadata_is_embedded(lenet_export):
    _, path, report = lenet_export
    if report.format == "onnx":
        props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    else:
        extra = {"cnnzoo.json": ""}
        torch.jit.load(str(path), _extra_files=extra)
        props = json.loads(extra["cnnzoo.json"])
    assert props["model"] == "lenet5"
    assert props["input_size"] == [1, 32, 32]
    assert props["mean"] == [0.5] and props["std"] == [0.5]
    assert props["class_names"] == [f"digit {i}" for i in range(10)]
    assert props["channel_order"] == "L"
    assert read_metadata(path) == props


@pytest.mark.parametrize("lenet_export", ["onnx"], indirect=True)
def test_onnx_metadata_reads_through_onnxruntime(lenet_export):
    path = lenet_export[1]
    meta = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    ).get_modelmeta()
    assert json.loads(meta.custom_metadata_map["std"]) == [0.5]


@pytest.mark.parametrize("lenet_export", ["onnx"], indirect=True)
def test_onnx_session_and_run_onnx(lenet_export):
    path = lenet_export[1]
    session = onnx_session(path, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    x = _digits(3)
    raw = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_array_equal(run_onnx(session, x).numpy(), raw)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="threads"):
            onnx_session(path, threads=bad)


# --- a failed check keeps what the user had ---------------------------------------------------


class _NearTie(nn.Module):
    """Logits of two classes that differ by 1e-5 (class 1 always wins): within the tolerance."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.copy_(torch.tensor([0.0, 1e-5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def _perturb(monkeypatch, change):
    real = export._load_runner

    def fake(fmt, path, device):
        runner = real(fmt, path, device)
        return lambda x: change(runner(x))

    monkeypatch.setattr(export, "_load_runner", fake)


def _assert_untouched(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_parity_failure_leaves_the_existing_file(fmt, tmp_path, monkeypatch):
    path = tmp_path / "model.out"
    path.write_bytes(b"the user's previous export")
    _perturb(monkeypatch, lambda y: y + 1e-2)
    with pytest.raises(ExportError) as info:
        export_model(create_model("mlp"), path, fmt, model_name="mlp")
    message = str(info.value)
    assert "\n" not in message
    # The model's own rounding error is measured, and far too small to excuse the difference.
    assert "random, batch 1: max |Δ| 1.00e-02 (tolerance 1.00e-04, eager's own fp32" in message
    _assert_untouched(path, b"the user's previous export")


def test_a_top1_disagreement_fails_even_within_tolerance(tmp_path, monkeypatch):
    path = tmp_path / "tie.pt"
    path.write_bytes(b"old")
    _perturb(monkeypatch, lambda y: y.flip(1))  # swaps the two near-equal logits
    agreement = (
        r"random, batch 1: max \|Δ\| \S+ \(tolerance 1.00e-04[^)]*\), top-1 0/1 agree: FAILED"
    )
    with pytest.raises(ExportError, match=agreement):
        export_model(_NearTie(), path, "torchscript", input_size=(1, 4, 4))
    _assert_untouched(path, b"old")


def _ill_conditioned() -> nn.Module:
    """Logits of about ±20 computed as (z + 1e5) − 1e5: the fp32 sum keeps only ~3 decimals of
    z, so the model's own fp32 output misses exact arithmetic by ~1e-1, far beyond 1e-4 · 20
    (what a trained network with near-zero BatchNorm variances does on unfamiliar inputs)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[1].bias.fill_(1e5)
        model[2].running_mean.fill_(1e5)
        model[2].running_var.fill_(1e-2)
    return model


def test_the_tolerance_widens_to_the_models_own_rounding_error():
    model = _ill_conditioned()
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
        exact = model.double()(x.double())
    model.float()
    error = (want.double() - exact).abs().max().item()  # by hand: fp32 against float64
    base = 1e-4 * max(1.0, want.abs().max().item())
    assert error > base  # the premise: eager itself misses exact arithmetic by more than 1e-4
    assert parity.fp32_rounding_error(model, x, want) == pytest.approx(error)
    # Another engine as far from eager as eager is from exact passes (a shift keeps the top-1);
    # one more than ROUNDING_FACTOR times that fails.
    measured = []

    def rounding() -> float:
        measured.append(1)
        return parity.fp32_rounding_error(model, x, want)

    ok = parity.compare_outputs("random", want, want + 3 * error, rounding)
    assert ok.passed and ok.tolerance == pytest.approx(4 * error)
    assert ok.rounding_error == pytest.approx(error) and "own fp32 rounding error" in ok.line()
    assert not parity.compare_outputs("random", want, want + 5 * error, rounding).passed
    # A well-conditioned model keeps the plain tolerance: the same shift fails there.
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        y = plain(x)
    check = parity.compare_outputs(
        "random", y, y + 3 * error, lambda: parity.fp32_rounding_error(plain, x, y)
    )
    assert not check.passed and check.tolerance == 1e-4 * max(1.0, y.abs().max().item())
    # Within the plain tolerance nothing is measured.
    measured.clear()
    assert parity.compare_outputs("random", want, want, rounding).rounding_error is None
    assert measured == []


def test_a_file_that_does_not_run_leaves_the_existing_file(tmp_path, monkeypatch):
    def broken(x):
        raise RuntimeError("Got invalid dimensions for input: images\nindex 0 Got: 1 Expected: 2")

    monkeypatch.setattr(export, "_load_runner", lambda fmt, path, device: broken)
    path = tmp_path / "tie.pt"
    path.write_bytes(b"old")
    with pytest.raises(ExportError) as info:
        export_model(_NearTie(), path, "torchscript", input_size=(1, 4, 4))
    assert "random, batch 1: the file does not run (Got invalid dimensions" in _one_line(info)
    _assert_untouched(path, b"old")


def test_an_exporter_failure_is_one_line(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("Failed to export the model\n(a long explanation)")

    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(ExportError) as info:
        export_model(create_model("mlp"), tmp_path / "m.onnx", "onnx", model_name="mlp")
    assert _one_line(info) == "torch.onnx.export failed on mlp: Failed to export the model"
    assert list(tmp_path.iterdir()) == []


def test_a_passing_export_replaces_the_existing_file(tmp_path):
    path = tmp_path / "tie.pt"
    path.write_bytes(b"old")
    report = export_model(_NearTie(), path, "torchscript", input_size=(1, 4, 4))
    assert path.read_bytes() != b"old" and report.model == "_NearTie"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tie.pt"]
    assert read_metadata(path)["model"] is None  # no registry name given


# --- refusals --------------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    ("names", "missing"),
    [(("onnxruntime",), "onnxruntime"), (("onnx", "onnxscript"), "onnx, onnxscript")],
)
def test_onnx_without_the_extra_names_it(names, missing, tmp_path, monkeypatch):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    with pytest.raises(ExportError) as info:
        export_model(create_model("mlp"), tmp_path / "m.onnx", "onnx", model_name="mlp")
    assert _one_line(info) == (
        f"ONNX export needs the onnx extra: pip install 'cnnzoo[onnx]' (missing: {missing})"
    )
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(tmp_path):
    with pytest.raises(InvalidArgumentError) as info:
        export_model(create_model("mlp"), tmp_path / "m", "tflite", model_name="mlp")
    assert "'tflite'" in _one_line(info) and "onnx, torchscript" in str(info.value)


def test_a_size_the_model_cannot_take_fails_before_exporting(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(torch.onnx, "export", never)
    with pytest.raises(InputSizeError) as info:
        export_model(
            create_model("alexnet"),
            tmp_path / "a.onnx",
            "onnx",
            input_size=(3, 32, 32),
            model_name="alexnet",
        )
    assert _one_line(info).startswith("alexnet at input 3×32×32: features.")
    assert "63+" in str(info.value)  # alexnet's registered minimum side
    with pytest.raises(InputSizeError) as info:
        export_model(create_model("resnet18"), tmp_path / "r.onnx", "onnx", input_size=(1, 32, 32))
    assert "3-channel" in _one_line(info)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "give input_size"),
        ({"input_size": (3, 32)}, "three positive integers"),
        ({"input_size": (3, 0, 32)}, "three positive integers"),
        ({"input_size": (1, 4, 4), "real_inputs": torch.zeros(2, 1, 5, 5)}, r"\(N, 1, 4, 4\)"),
        ({"input_size": (1, 4, 4), "real_inputs": torch.zeros(1, 4, 4)}, r"\(N, 1, 4, 4\)"),
    ],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        export_model(_NearTie(), tmp_path / "m.pt", "torchscript", **kwargs)
    _one_line(info)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"folder .* missing") as info:
        export_model(_NearTie(), tmp_path / "no" / "m.pt", "torchscript", input_size=(1, 4, 4))
    _one_line(info)


def test_an_unknown_model_name_is_refused(tmp_path):
    with pytest.raises(UnknownModelError, match="resnet18") as info:
        export_model(
            create_model("resnet18"), tmp_path / "m.pt", "torchscript", model_name="resnet19"
        )
    _one_line(info)


def test_the_model_name_gives_the_default_size(tmp_path):
    report = export_model(create_model("mlp"), tmp_path / "m.pt", "torchscript", model_name="mlp")
    assert report.input_size == (1, 32, 32)


def test_a_model_returning_a_tuple_is_refused(tmp_path):
    class Pair(_NearTie):
        def forward(self, x):
            y = super().forward(x)
            return y, y

    with pytest.raises(ExportError, match="returns a tuple in eval mode") as info:
        export_model(Pair(), tmp_path / "m.pt", "torchscript", input_size=(1, 4, 4))
    _one_line(info)
    assert list(tmp_path.iterdir()) == []


# --- the real images: chosen by the library, prepared by the weights' preprocessing ----------


def _folder_of_pets(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(40, 30), (30, 52), (36, 36), (64, 33), (45, 45)]):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def _folder_pre(dataset: str | None, chans: int = 3) -> Preprocessing:
    return Preprocessing(
        input_size=(chans, 32, 32), resize=32, crop=32, interpolation="bilinear",
        mean=(0.4,) * chans, std=(0.3,) * chans, channel_order="RGB" if chans == 3 else "L",
        class_names=("cat", "dog"), source="test", dataset=dataset,
    )  # fmt: skip


def test_check_images_come_from_the_weights_dataset_prepared_as_they_ask(tmp_path):
    from cnnzoo.data import load_dataset
    from cnnzoo.export import check_images

    dataset = f"imagefolder:{_folder_of_pets(tmp_path / 'pets')}"
    pre = _folder_pre(dataset)
    chosen = check_images(pre, count=3)
    val = load_dataset(dataset, preprocessing=pre).val  # 1 image a class: the fixed 20 % split
    expected = torch.stack([val[i][0] for i in range(len(val))])
    assert len(val) == 2 and chosen.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(chosen.images, expected, rtol=0, atol=0)
    # by hand for the first: shorter side to 32, centre crop 32, (x - 0.4) / 0.3
    from PIL import Image
    from torchvision.transforms import v2

    with Image.open(val.samples[0][0]) as img:
        raw = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1) / 255
    ref = (v2.CenterCrop(32)(v2.Resize(32, antialias=True)(raw)) - 0.4) / 0.3
    torch.testing.assert_close(chosen.images[0], ref, rtol=0, atol=1e-5)
    assert chosen.source.startswith(f"2 validation images of {dataset}, prepared as the weights")
    assert "shorter side to 32" in chosen.source


def test_check_images_fall_back_to_digits_and_say_why(tmp_path):
    from cnnzoo.export import check_images

    none = check_images(_folder_pre(None, chans=1), count=4)
    assert none.images.shape == (4, 1, 32, 32)
    assert "of digits (the weights name no dataset)" in none.source
    gone = check_images(_folder_pre(f"imagefolder:{tmp_path / 'gone'}", chans=1), count=2)
    assert f"the weights' dataset imagefolder:{tmp_path / 'gone'} cannot be read here" in (
        gone.source
    )
    assert "\n" not in gone.source and gone.images.shape == (2, 1, 32, 32)


def test_check_images_at_another_input_size_and_their_refusals(tmp_path):
    from cnnzoo.export import check_images

    pre = _folder_pre(None, chans=1)
    other = check_images(pre, "digits", count=2, input_size=(1, 40, 40))
    assert other.images.shape == (2, 1, 40, 40) and "resize to 40×40" in other.source
    with pytest.raises(InvalidArgumentError, match="has 3 channels, the weights 1") as info:
        check_images(pre, "digits", input_size=(3, 32, 32))
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidArgumentError, match="count must be"):
        check_images(pre, "digits", count=0)


def test_export_reports_where_its_real_images_came_from(tmp_path):
    from cnnzoo.export import check_images

    model = create_model("lenet5", num_classes=2, in_chans=3)
    model.pretrained_cfg = _folder_pre(f"imagefolder:{_folder_of_pets(tmp_path / 'pets')}")
    chosen = check_images(model.pretrained_cfg)
    report = export_model(model, tmp_path / "m.pt", "torchscript", real_inputs=chosen)
    assert report.checks[-1].name == "real images" and report.checks[-1].batch == 2
    assert report.real_images == chosen.source
    assert report.lines()[-1] == f"  real images: {chosen.source}"
