"""`cnnzoo.visualize` and `cnnzoo visualize`: feature maps against the analyzer, Grad-CAM
against a hand computation, the model left untouched, every family end to end, the pictures
meaning something (a synthetic task whose answer is known, LeNet-5's learned filters), and
one-line errors."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save

from cnnzoo import create_model, get_spec, summarize
from cnnzoo.cli import main
from cnnzoo.data.preprocessing import Preprocessing
from cnnzoo.errors import ExportError, InvalidArgumentError
from cnnzoo.visualize import (
    class_activation_map,
    default_cam_layer,
    feature_maps,
    filter_layer,
    filters,
    stage_layers,
)
from cnnzoo.visualize.draw import most_active, symmetric
from cnnzoo.visualize.report import visualize_files
from cnnzoo.visualize.synthetic import (
    CAM_LAYER,
    Shapes,
    TinyCNN,
    accuracy,
    peak_in_box,
    shapes_dataset,
    train_tiny,
)

# The smallest member of each family, at its smallest valid input (`cnnzoo list`); AlexNet
# at 67, not its minimum 63, so that its last stages still have a map larger than 1×1.
FAMILIES = {
    "lenet": ("lenet5", 1, 32),
    "alexnet": ("alexnet", 3, 67),
    "vgg": ("vgg11", 3, 32),
    "googlenet": ("googlenet", 3, 32),
    "resnet": ("resnet20", 3, 32),
    "densenet": ("densenet121", 3, 32),
    "mobilenet": ("mobilenet_v3_small", 3, 32),
    "efficientnet": ("efficientnet_b0", 3, 32),
    "mlp": ("mlp", 1, 32),
}
# The default layer of a class activation map at each model's default input: the last
# convolutional stage, GoogLeNet's last Inception block, DenseNet's final norm.
DEFAULT_CAM_LAYER = {
    "lenet5": "s4",  # c5 is a 1×1 map: a fully-connected layer in all but name
    "alexnet": "features.12",  # conv5's max-pool
    "vgg11": "features.20",  # block5's max-pool
    "googlenet": "inception5b",
    "resnet50": "layer4",
    "resnet20": "layer3",
    "densenet121": "features.norm5",
    "mobilenet_v2": "features.18",  # the last 1×1 convolution
    "mobilenet_v3_small": "features.12",
    "efficientnet_b0": "features.8",
}
CLASSES = ("cat", "<b>dog</b>", "a&b")


def preprocessing(chans: int, side: int) -> Preprocessing:
    order = "RGB" if chans == 3 else "L"
    return Preprocessing(
        (chans, side, side), None, None, "bilinear", (0.5,) * chans, (0.25,) * chans, order,
        CLASSES, "test",
    )  # fmt: skip


def random_model(name: str, chans: int, side: int):
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(CLASSES), in_chans=chans)
    model.pretrained_cfg = preprocessing(chans, side)
    return model.eval()


def write_image(path, side=40, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((side, side + 7, 3)) * 255).astype(np.uint8)).save(path)
    return path


def last_rows(name_or_model, size) -> dict[str, tuple[int, ...]]:
    """The analyzer's output shape per layer name, the last call's for a module called twice."""
    return {row.name: row.output_shape for row in summarize(name_or_model, size).layers}


def no_hooks(model) -> bool:
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules()
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Faster than two on a busy two-core machine (these models are small), and restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- every family ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "layer"), DEFAULT_CAM_LAYER.items())
def test_the_default_cam_layer_of_every_family(name, layer):
    from cnnzoo.analysis.trace import meta_build

    spec = get_spec(name)
    with meta_build():  # shapes only: no weights are made
        model = create_model(name)
    assert default_cam_layer(model, spec.input_size) == layer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_maps_shapes_cam_and_pictures(family, tmp_path):
    name, chans, side = FAMILIES[family]
    model = random_model(name, chans, side)
    size = (chans, side, side)
    # Feature maps: every leaf the analyzer lists, each of the analyzer's shape.
    expected = last_rows(model, size)
    x = torch.randn(2, *size)
    maps = feature_maps(model, x, list(expected))
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {
        k: tuple(v[1:]) for k, v in expected.items()
    }
    # The end of the last stage: what forward_features returns (or the stage's own output).
    last = list(stage_layers(model).values())[-1]
    # (The other families' last stage is a hidden FC layer; DenseNet adds a ReLU after it.)
    if family in ("googlenet", "resnet", "efficientnet"):
        out = feature_maps(model, x, [last])[last]
        with torch.no_grad():
            assert torch.allclose(out, model.forward_features(x), atol=1e-5)
    # The page: filters, the first and last stages' maps, one class's map.
    paths = [write_image(tmp_path / "a.png")]
    first = next(iter(stage_layers(model).values()))
    result = visualize_files(model, paths, tmp_path / "out", layers=[first, last], topk=1)
    files = {p.name for p in (tmp_path / "out").rglob("*.png")}
    assert {"filters.png", f"maps_{first}.png", f"maps_{last}.png"} <= files
    if family == "mlp":  # no spatial map: no class activation map, and a note says why
        assert result.cam_layer is None and "no class activation map" in result.notes[0]
        assert filters(model).shape == (model.hidden[0].out_features, 1, 32, 32)
    else:
        assert len([f for f in files if f.startswith("cam_")]) == 1
        assert result.cam_layer in stage_layers(model).values()
        k, c = filters(model).shape[:2]
        first_conv = model.get_submodule(filter_layer(model))
        assert (k, c) == (first_conv.out_channels, chans)
    assert no_hooks(model) and not model.training


# --- Grad-CAM by hand ------------------------------------------------------------------------


def test_gradcam_equals_the_hand_computation():
    model = random_model("resnet20", 3, 32)
    x = torch.randn(3, 3, 32, 32)
    cam = class_activation_map(model, x, target=[0, 2, 1], layer="layer2")
    # By hand: the layer's maps A and ∂y_c/∂A from hooks; weights = mean gradient per channel,
    # map = ReLU(Σ_k w_k A_k), upsampled bilinearly to the input, scaled to [0, 1] per image.
    kept = {}
    handle = model.layer2.register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    logits = model(x)
    handle.remove()
    a = kept["a"]
    grads = torch.autograd.grad(logits[[0, 1, 2], [0, 2, 1]].sum(), a)[0]
    weights = grads.mean(dim=(2, 3), keepdim=True)
    hand = F.relu((weights * a).sum(dim=1, keepdim=True))
    hand = F.interpolate(hand, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    hand = hand - hand.amin(dim=(1, 2), keepdim=True)
    hand = hand / (hand.amax(dim=(1, 2), keepdim=True) + 1e-7)
    assert cam.shape == (3, 32, 32)
    # OpenCV resizes in the library: another engine's rounding (DESIGN.md: 1e-4).
    torch.testing.assert_close(cam, hand.detach(), atol=1e-4, rtol=0)
    # No target: each image's most probable class.
    top = logits.argmax(dim=1).tolist()
    torch.testing.assert_close(
        class_activation_map(model, x, layer="layer2"),
        class_activation_map(model, x, target=top, layer="layer2"),
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_the_model_is_left_as_it_was(method):
    model = random_model("resnet20", 3, 32)
    model.train()
    model.layer1.eval()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = grad = torch.ones_like(model.fc.weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 3, 32, 32)
    cam = class_activation_map(model, x, target=1, method=method)
    feature_maps(model, x, ["layer1", "layer3.2.relu"])
    assert cam.shape == (2, 32, 32) and cam.min() >= 0 and cam.max() <= 1
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.fc.weight.grad is grad and model.conv1.weight.grad is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN stats too
    assert no_hooks(model)


def test_a_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import fails
    with pytest.raises(ExportError, match=re.escape("pip install 'cnnzoo[visualize]'")):
        class_activation_map(random_model("resnet20", 3, 32), torch.randn(1, 3, 32, 32))


def test_drawing_helpers():
    w = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]])
    assert symmetric(w).tolist() == [[[0.0, 0.5], [0.75, 1.0]]]
    maps = torch.zeros(3, 2, 2)
    maps[2] += 5
    maps[0, 0, 0] = 1
    assert most_active(maps, 2) == [2, 0]
    assert most_active(torch.tensor([0.1, 3.0, -1.0]), 3) == [1, 0, 2]


# --- the pictures mean something -------------------------------------------------------------


@pytest.fixture(scope="session")
def shapes_model():
    """The synthetic task's CNN, trained once for the session (a few seconds)."""
    model = train_tiny(shapes_dataset(1200, seed=0), epochs=4)
    test = shapes_dataset(300, seed=1)
    shapes = test.labels < 2  # the checks are about the shapes' places
    return model, Shapes(test.images[shapes], test.labels[shapes], test.boxes[shapes])


def test_gradcam_finds_the_shape_and_a_random_network_does_not(shapes_model):
    model, test = shapes_model
    assert accuracy(model, test) >= 0.9
    cam = class_activation_map(model, test.images, target=test.labels.tolist(), layer=CAM_LAYER)
    trained = peak_in_box(cam, test.boxes).float().mean().item()
    torch.manual_seed(1)
    random_copy = TinyCNN().eval()
    cam = class_activation_map(
        random_copy, test.images, target=test.labels.tolist(), layer=CAM_LAYER
    )
    random_rate = peak_in_box(cam, test.boxes).float().mean().item()
    assert trained >= 0.9
    assert random_rate <= 0.6 and trained - random_rate >= 0.3, (trained, random_rate)
    # Chance: a box of 9×9 in 32×32 pixels holds the peak of a map with no information 8% of
    # the time; the random copy does better only because random filters still respond to
    # bright blobs (Adebayo et al. 2018 saw the same edge-detector effect).


def test_lenet_filters_change_from_their_initialisation_into_strokes():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:800], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target[:800])
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    before = filters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = filters(model)
    assert after.shape == before.shape == (6, 1, 5, 5)
    assert (after - before).norm() / before.norm() > 0.2

    def neighbour_correlation(w: torch.Tensor) -> float:
        # A stroke detector's neighbouring weights go together (smooth bars and edges); an
        # initialisation's are independent.
        w = w[:, 0]
        a = torch.cat([w[:, :, :-1].flatten(), w[:, :-1, :].flatten()])
        b = torch.cat([w[:, :, 1:].flatten(), w[:, 1:, :].flatten()])
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    assert neighbour_correlation(before) < 0.1 < 0.15 < neighbour_correlation(after)


# --- the command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("visualize")
    model = random_model("lenet5", 1, 32)
    meta = {"model": "lenet5", "num_classes": "3", **model.pretrained_cfg.to_metadata()}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    (folder / "w.safetensors").write_bytes(save(state, metadata=meta))
    write_image(folder / "one.png")
    write_image(folder / "two.jpg", seed=1)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_the_command_writes_the_pictures_and_a_self_contained_page(capsys, lenet_files):
    f = lenet_files
    argv = ["visualize", "--weights", str(f / "w.safetensors"), str(f / "one.png")]
    assert main([*argv, "--out", str(f / "out")]) == 0
    out = capsys.readouterr().out
    assert "one.png: " in out and "index.html" in out
    names = {p.name for p in (f / "out" / "one").iterdir()}
    assert names == {
        "maps_s2.png", "maps_s4.png", "maps_act5.png", "maps_act6.png",  # the stages' ends
        "cam_0_cat.png", "cam_1__b_dog__b_.png", "cam_2_a_b.png",  # the top 3 of 3 classes
    }  # fmt: skip
    page = (f / "out" / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 + 7
    assert "&lt;b&gt;dog&lt;/b&gt;" in page and "<b>dog</b>" not in page and "a&amp;b" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing from outside the page


def test_the_command_maps_one_class_at_chosen_layers(capsys, lenet_files):
    f = lenet_files
    argv = ["visualize", "--weights", str(f / "w.safetensors"), str(f / "one.png")]
    argv += [str(f / "two.jpg"), "--layers", "c1,c3", "--class", "2", "--cam", "gradcam++"]
    assert main([*argv, "--out", str(f / "o2")]) == 0
    for image in ("one", "two"):
        names = {p.name for p in (f / "o2" / image).iterdir()}
        assert names == {"maps_c1.png", "maps_c3.png", "cam_2_a_b.png"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "c3,conv3"], "LeNet5 has no layer 'conv3' (did you mean c3"),
        (["--layers", ","], "--layers ',' names no layer"),
        (["--class", "3"], "--class 3 is out of range: the model has 3 classes, 0 to 2."),
        (["--topk", "0"], "--topk must be a positive integer, got 0."),
        (["--cam", "gradcam+"], "--cam 'gradcam+' is not one of gradcam, gradcam++, scorecam"),
        (["NOTES"], "notes.txt is not an image file PIL can read"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, lenet_files, extra, message):
    f = lenet_files
    extra = [str(f / "notes.txt") if e == "NOTES" else e for e in extra]
    argv = ["visualize", "--weights", str(f / "w.safetensors"), str(f / "one.png"), *extra]
    assert main([*argv, "--out", str(f / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cnnzoo visualize: error: ") and message in err, err
    assert not (f / "bad").exists()  # checked before anything is written


def test_library_errors():
    model = random_model("resnet20", 3, 32)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(InvalidArgumentError, match="did you mean layer1"):
        feature_maps(model, x, ["layer1", "layer_1"])
    with pytest.raises(InvalidArgumentError, match="not a spatial map"):
        class_activation_map(model, x, layer="fc")
    with pytest.raises(InvalidArgumentError, match="runs 2 times in one pass"):
        class_activation_map(model, x, layer="layer1.0.relu")  # the block's shared ReLU
    with pytest.raises(InvalidArgumentError, match="class index 3 is out of range"):
        class_activation_map(model, x, target=3)
    with pytest.raises(InvalidArgumentError, match="is not one of gradcam"):
        class_activation_map(model, x, method="cam")
    with pytest.raises(InvalidArgumentError, match="no layer with a spatial map"):
        default_cam_layer(random_model("mlp", 1, 32), (1, 32, 32))
    assert get_spec("lenet5").min_size == 32  # FAMILIES' sizes are the smallest valid
