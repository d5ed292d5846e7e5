"""Weight loading: every accepted file kind, the adaptations, the report and the refusals.

Every file is written by the test from randomly initialised models (no weights are downloaded);
torchvision file names are made "real-looking" by computing their SHA-256 prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo import weights
from cnnzoo.errors import CnnzooError, WeightsError
from cnnzoo.weights import load_weights
from cnnzoo.weights.keys import map_timm_effnet


def _assert_same(ours: torch.Tensor, ref: torch.Tensor) -> None:
    # DESIGN.md §4: one fp32 re-implementation of the same arithmetic, 1e-5 · max(1, max |y|).
    tol = 1e-5 * max(1.0, ref.abs().max().item())
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= tol


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # Fresh BatchNorm has mean 0, var 1, γ 1, β 0: random statistics make a key mix-up visible.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _save_hashed(state: dict, folder: Path, stem: str) -> Path:
    """Save as torchvision names files: ``<stem>-<first 8 hex digits of the SHA-256>.pth``."""
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = folder / f"{stem}-{digest}.pth"
    tmp.rename(path)
    return path


def _x(side: int, chans: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, chans, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tv_resnet18() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.resnet18())


@pytest.fixture(scope="module")
def resnet18_file(tv_resnet18, tmp_path_factory) -> Path:
    return _save_hashed(tv_resnet18.state_dict(), tmp_path_factory.mktemp("tv"), "resnet18")


@pytest.fixture(scope="module")
def tv_googlenet() -> torchvision.models.GoogLeNet:
    torch.manual_seed(0)
    # torchvision's ImageNet GoogLeNet files carry the auxiliary heads, so build it with them.
    return _randomise_bn(torchvision.models.googlenet(aux_logits=True, init_weights=True))


@pytest.fixture(scope="module")
def googlenet_file(tv_googlenet, tmp_path_factory) -> Path:
    return _save_hashed(tv_googlenet.state_dict(), tmp_path_factory.mktemp("tv"), "googlenet")


# --- the torchvision table --------------------------------------------------------------------


def test_torchvision_table_matches_installed_torchvision():
    shared = {cnnzoo.get_spec(n).torchvision for n in cnnzoo.list_models()} - {None}
    expected = {}
    for builder in shared:
        for w in torchvision.models.get_model_weights(builder):
            t = w.transforms()
            if tuple(t.mean) != weights.IMAGENET_MEAN:  # vgg16's Caffe-style feature weights
                continue
            assert tuple(t.std) == weights.IMAGENET_STD
            name = w.url.rsplit("/", 1)[1]
            row = (builder, w.name, t.resize_size[0], t.crop_size[0], t.interpolation.value)
            expected[name] = row
    assert {k: tuple(v) for k, v in weights.TORCHVISION_FILES.items()} == expected


# --- our own files ----------------------------------------------------------------------------


def test_safetensors_export_round_trip(tmp_path):
    from cnnzoo.training.trainer import _save_weights

    torch.manual_seed(0)
    model = _randomise_bn(cnnzoo.create_model("resnet18", num_classes=4, in_chans=1))
    names = ["zero", "one", "two", "three"]
    metadata = {
        "model": "resnet18",
        "num_classes": "4",
        "in_chans": "1",
        "image_size": "32",
        "mean": json.dumps([0.25]),
        "std": json.dumps([0.5]),
        "class_names": json.dumps(names),
        "dataset": "digits",
    }
    path = tmp_path / "weights.safetensors"
    _save_weights(model, path, metadata)

    loaded, report = load_weights("resnet18", path)
    assert (loaded.num_classes, loaded.conv1.in_channels) == (4, 1)
    _assert_same(loaded(_x(32, 1)), model(_x(32, 1)))
    assert report.complete and report.strict and report.source == "cnnzoo export"
    pre = loaded.pretrained_cfg
    assert pre.class_names == tuple(names)
    assert (pre.mean, pre.std, pre.input_size, pre.channel_order) == (
        (0.25,),
        (0.5,),
        (1, 32, 32),
        "L",
    )

    with pytest.raises(WeightsError, match="of 'resnet18', not 'resnet34'"):
        load_weights("resnet34", path)


def test_checkpoint_loads_and_refuses_another_model(tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(cnnzoo.create_model("lenet5", num_classes=10, in_chans=1))
    path = tmp_path / "last.pt"
    torch.save({"model_name": "lenet5", "model": model.state_dict(), "config": {}}, path)
    loaded, report = load_weights("lenet5", path)
    assert report.source == "cnnzoo checkpoint" and report.complete
    x = _x(32, 1)
    _assert_same(loaded(x), model(x))
    with pytest.raises(WeightsError) as err:
        load_weights("resnet18", path)
    assert "checkpoint of 'lenet5', not 'resnet18'" in str(err.value)
    assert "\n" not in str(err.value)


def test_file_that_names_its_architecture_loads_without_a_model_name(tmp_path, resnet18_file):
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    path = tmp_path / "last.pt"
    torch.save({"model_name": "lenet5", "model": model.state_dict()}, path)
    loaded, report = load_weights(None, path)
    assert report.model == "lenet5" and type(loaded).__name__ == type(model).__name__
    # a torchvision file with its published name names its architecture too
    assert _load_as(resnet18_file, "resnet18-f37072fd.pth", None, tmp_path)[1].model == "resnet18"


def test_file_that_does_not_name_its_architecture_asks_for_the_model(tmp_path):
    path = tmp_path / "state.pth"
    torch.save(cnnzoo.create_model("lenet5", num_classes=10, in_chans=1).state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not name its architecture .* --model"):
        load_weights(None, path)


def test_model_without_convolution_loads(tmp_path):
    torch.manual_seed(0)
    model = cnnzoo.create_model("mlp", num_classes=10, in_chans=1).eval()
    path = tmp_path / "best.pt"
    torch.save({"model_name": "mlp", "model": model.state_dict()}, path)
    loaded, report = load_weights("mlp", path, in_chans=1)
    assert report.complete
    x = torch.randn(2, *cnnzoo.get_spec("mlp").input_size)
    _assert_same(loaded(x), model(x))


# --- torchvision files ------------------------------------------------------------------------


def test_torchvision_file_loads_strictly_and_agrees(tv_resnet18, resnet18_file):
    model, report = load_weights("resnet18", resnet18_file)
    assert report.strict and report.complete and report.source == "state_dict"
    assert len(report.loaded) == len(tv_resnet18.state_dict())
    _assert_same(model(_x(32)), tv_resnet18(_x(32)))
    assert "assuming ImageNet" in str(report)  # an unknown name: the preprocessing is a guess
    # The same file through the public factory.
    same = cnnzoo.create_model("resnet18", weights=resnet18_file)
    _assert_same(same(_x(32)), tv_resnet18(_x(32)))


def test_prefixed_keys_are_stripped(tv_resnet18, tmp_path):
    state = {f"module._orig_mod.{k}": v for k, v in tv_resnet18.state_dict().items()}
    path = tmp_path / "ddp_compiled.pth"
    torch.save(state, path)
    model, report = load_weights("resnet18", path)
    assert report.complete
    assert any("_orig_mod." in n and "module." in n for n in report.notes)
    _assert_same(model(_x(32)), tv_resnet18(_x(32)))


def test_class_count_change_replaces_the_head(tv_resnet18, resnet18_file):
    model, report = load_weights("resnet18", resnet18_file, num_classes=7)
    assert model(_x(32)).shape == (2, 7) and model.num_classes == 7
    assert report.reinitialised == ["fc.weight", "fc.bias"]
    assert [s.split(":")[0] for s in report.shape_mismatched] == ["fc.weight", "fc.bias"]
    assert not report.complete and "re-initialised: 2" in str(report)
    assert "fc.weight" not in report.loaded
    torch.testing.assert_close(model.layer4[1].conv2.weight, tv_resnet18.layer4[1].conv2.weight)
    _assert_same(model.forward_features(_x(32)), _features(tv_resnet18, _x(32)))


def _features(tv: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


def test_one_channel_sums_the_rgb_kernels(tv_resnet18, resnet18_file):
    model, report = load_weights("resnet18", resnet18_file, in_chans=1)
    rgb = tv_resnet18.conv1.weight
    torch.testing.assert_close(model.conv1.weight, rgb.sum(dim=1, keepdim=True))
    assert any("summed into 1" in n for n in report.notes)
    # A grey image fed as one channel equals the same image copied into R, G and B.
    grey = _x(32, 1)
    _assert_same(model(grey), tv_resnet18(grey.expand(-1, 3, -1, -1)))
    assert model.pretrained_cfg.mean == pytest.approx((sum(weights.IMAGENET_MEAN) / 3,))
    assert model.pretrained_cfg.channel_order == "L"


def test_n_channels_repeat_and_rescale(tv_resnet18, resnet18_file):
    model, report = load_weights("resnet18", resnet18_file, in_chans=4)
    rgb = tv_resnet18.conv1.weight
    torch.testing.assert_close(model.conv1.weight, torch.cat([rgb, rgb[:, :1]], 1) * 3 / 4)
    assert any("repeated cyclically to 4 and scaled by 3/4" in n for n in report.notes)
    assert model.pretrained_cfg.mean == (*weights.IMAGENET_MEAN, weights.IMAGENET_MEAN[0])


def test_wrong_architecture_is_one_clear_line(resnet18_file):
    with pytest.raises(WeightsError) as err:
        load_weights("resnet50", resnet18_file)
    text = str(err.value)
    assert "\n" not in text and "does not fit resnet50" in text
    assert "layer1.0.conv3.weight" in text and len(text) < 600
    with pytest.raises(WeightsError, match=r"no 'classifier\.1\.weight'"):
        load_weights("mobilenet_v2", resnet18_file)


def test_hash_mismatch_is_refused(tv_resnet18, tmp_path):
    path = tmp_path / "resnet18-deadbeef.pth"
    torch.save(tv_resnet18.state_dict(), path)
    with pytest.raises(WeightsError) as err:
        load_weights("resnet18", path)
    text = str(err.value)
    assert "\n" not in text and "deadbeef" in text and str(path) in text


def test_known_torchvision_name_of_another_model_is_refused(resnet18_file, tmp_path):
    with pytest.raises(WeightsError, match="torchvision's resnet18 weights, not 'resnet34'"):
        _load_as(resnet18_file, "resnet18-f37072fd.pth", "resnet34", tmp_path)


def _load_as(src: Path, name: str, model: str | None, folder: Path, **kwargs):
    """Load ``src`` under a known torchvision file name whose hash it cannot have.

    A random file cannot carry the real digits, so the table entry of ``name`` is copied under
    the file's own (correctly hashed) name for the duration of the call.
    """
    weights.TORCHVISION_FILES[src.name] = weights.TORCHVISION_FILES[name]  # the one table
    try:
        return load_weights(model, src, **kwargs)
    finally:
        del weights.TORCHVISION_FILES[src.name]


def test_known_torchvision_file_brings_preprocessing_and_class_names(resnet18_file, tmp_path):
    model, report = _load_as(resnet18_file, "resnet18-f37072fd.pth", "resnet18", tmp_path)
    pre = model.pretrained_cfg
    assert report.source == "torchvision"
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")
    assert pre.mean == weights.IMAGENET_MEAN and len(pre.class_names) == 1000
    assert pre.class_names[0] == "tench"
    # A new head has no names.
    model, _ = _load_as(resnet18_file, "resnet18-f37072fd.pth", "resnet18", tmp_path, num_classes=3)
    assert model.pretrained_cfg.class_names is None


# --- GoogLeNet and DenseNet -------------------------------------------------------------------


def test_googlenet_aux_heads_dropped_and_reported(tv_googlenet, googlenet_file):
    model, report = load_weights("googlenet", googlenet_file)
    assert model.aux1 is None and not model.transform_input  # an unknown name: nothing assumed
    assert report.unexpected and all(k.startswith(("aux1.", "aux2.")) for k in report.unexpected)
    assert any("dropped" in n and "aux_logits=False" in n for n in report.notes)
    _assert_same(model(_x(64)), tv_googlenet.eval()(_x(64)))

    kept, report = load_weights("googlenet", googlenet_file, aux_logits=True, num_classes=5)
    assert not report.unexpected
    assert set(report.reinitialised) == {
        "fc.weight", "fc.bias", "aux1.fc2.weight", "aux1.fc2.bias", "aux2.fc2.weight",
        "aux2.fc2.bias",
    }  # fmt: skip
    torch.testing.assert_close(kept.aux1.fc1.weight, tv_googlenet.aux1.fc1.weight)


def test_torchvision_googlenet_file_sets_transform_input(tv_googlenet, googlenet_file, tmp_path):
    model, report = _load_as(googlenet_file, "googlenet-1378be20.pth", "googlenet", tmp_path)
    assert model.transform_input
    assert any("transform_input=True" in n for n in report.notes)
    reference = torchvision.models.googlenet(
        aux_logits=True, transform_input=True, init_weights=True
    )
    reference.load_state_dict(tv_googlenet.state_dict())
    _assert_same(model(_x(64)), reference.eval()(_x(64)))
    # The real file name with other contents fails its hash check.
    fake = tmp_path / "googlenet-1378be20.pth"
    fake.write_bytes(googlenet_file.read_bytes())
    with pytest.raises(WeightsError, match="1378be20"):
        load_weights("googlenet", fake)


def test_densenet_legacy_keys_are_renamed(tmp_path):
    torch.manual_seed(0)
    tv = _randomise_bn(torchvision.models.densenet121())
    # Undo torchvision's rename: denselayer1.norm1.weight → denselayer1.norm.1.weight.
    legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(.+)$")
    # Files that old have no BatchNorm num_batches_tracked either.
    state = {
        legacy.sub(r"\1.\2.\3", k): v
        for k, v in tv.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    path = _save_hashed(state, tmp_path, "densenet121")
    model, report = load_weights("densenet121", path)
    assert report.complete and report.strict
    assert any("legacy DenseNet keys" in n for n in report.notes)
    assert any("num_batches_tracked" in n for n in report.notes)
    _assert_same(model(_x(32)), tv(_x(32)))


# --- timm -------------------------------------------------------------------------------------


def _timm():
    """timm is a dev dependency: without it these, the only tests of the timm key mapping, must
    fail rather than skip (a skip would pass a broken mapping unseen)."""
    try:
        import timm
    except ImportError:
        pytest.fail(
            "timm is not installed: install the dev extra (`pip install -e '.[dev]'`, as `make "
            "test` does) — these tests build timm's models to check the key mapping."
        )
    return timm


@pytest.mark.parametrize(
    ("timm_name", "ours"),
    [("mobilenetv1_100", "mobilenet_v1"), ("efficientnet_b0", "efficientnet_b0")],
)
def test_timm_state_dicts_map_exactly(timm_name, ours, tmp_path):
    timm = _timm()
    torch.manual_seed(0)
    reference = _randomise_bn(timm.create_model(timm_name, pretrained=False))
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    model, report = load_weights(ours, path)
    assert report.complete and report.strict and report.source == f"timm {timm_name}"
    with torch.no_grad():
        _assert_same(model(_x(64)), reference(_x(64)))
    assert model.pretrained_cfg.crop == 224 and model.pretrained_cfg.interpolation == "bicubic"


def test_timm_efficientnet_b2_keys_and_shapes_fit():
    timm = _timm()
    with torch.device("meta"):
        state = timm.create_model("efficientnet_b2", pretrained=False).state_dict()
        ours = cnnzoo.create_model("efficientnet_b2").state_dict()
    mapped = map_timm_effnet(state)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.items()}


def test_timm_file_into_another_model_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(WeightsError, match="timm files load into mobilenet_v1"):
        load_weights("resnet18", path)


# --- safety and bad files ---------------------------------------------------------------------


class _Payload:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "trap": payload}, path)
    assert not marker.exists()
    with pytest.raises(WeightsError) as err:
        load_weights("resnet18", path)
    assert "\n" not in str(err.value) and "refused" in str(err.value)
    assert "system" in str(err.value)  # names what the file wanted to call
    assert not marker.exists()


def test_bad_files_get_one_line(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights("resnet18", tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights("resnet18", junk)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match="no state_dict"):
        load_weights("resnet18", tensor)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="safetensors"):
        load_weights("resnet18", bad)
    assert issubclass(WeightsError, CnnzooError)


def test_create_model_without_weights_is_unchanged():
    model = cnnzoo.create_model("lenet5", num_classes=3, in_chans=1)
    assert model.num_classes == 3 and not hasattr(model, "pretrained_cfg")
    with pytest.raises(CnnzooError, match="num_classes must be a positive integer"):
        cnnzoo.create_model("lenet5", num_classes=0, weights="anything.pth")
