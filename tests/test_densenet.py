"""DenseNet-BC: the paper's widths, the valid sizes, drop_rate and its option checks.

Parameters, multiply-adds, default torchvision parity and the min-size forward are in the shared
tests; here are the DenseNet-specific facts, each against a hand calculation or torchvision.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.models.densenet import DenseLayer, DenseNet
from tests.conftest import same_outputs


def _meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "k", "widths"),
    [
        # Stem 2k; each block adds layers·k; each transition halves (θ = 0.5). By hand:
        # 121: 64 +6·32 = 256 → 128 +12·32 = 512 → 256 +24·32 = 1024 → 512 +16·32 = 1024.
        ("densenet121", 32, (64, 256, 128, 512, 256, 1024, 512, 1024)),
        # 169: 64 → 256 → 128 → 512 → 256 +32·32 = 1280 → 640 +32·32 = 1664.
        ("densenet169", 32, (64, 256, 128, 512, 256, 1280, 640, 1664)),
        # 201: 64 → 256 → 128 → 512 → 256 +48·32 = 1792 → 896 +32·32 = 1920.
        ("densenet201", 32, (64, 256, 128, 512, 256, 1792, 896, 1920)),
        # 161 (k = 48, stem 96): 96 +6·48 = 384 → 192 +12·48 = 768 → 384 +36·48 = 2112
        # → 1056 +24·48 = 2208.
        ("densenet161", 48, (96, 384, 192, 768, 384, 2112, 1056, 2208)),
    ],
)
def test_widths_follow_growth_rate_and_compression(name, k, widths):
    model = _meta(name)
    f = model.features
    got = [f.conv0.out_channels]
    for i in range(1, 5):
        block = getattr(f, f"denseblock{i}")
        layers = list(block.children())
        assert layers[0].conv1.out_channels == 4 * k  # the BC bottleneck is 4k wide
        assert all(layer.conv2.out_channels == k for layer in layers)
        got.append(layers[-1].conv1.in_channels + k)
        if i < 4:
            got.append(getattr(f, f"transition{i}").conv.out_channels)
    assert tuple(got) == widths
    assert model.num_features == widths[-1] == f.norm5.num_features
    assert model.classifier.in_features == widths[-1]


@pytest.mark.parametrize(
    ("side", "out"),
    [
        # Stem ⌊(W−1)/2⌋+1 twice, then ⌊W/2⌋ at each of the three transitions:
        (224, 7),  # 112, 56, 28, 14, 7
        (96, 3),  # 48, 24, 12, 6, 3
        (60, 1),  # 30, 15, 7, 3, 1
        (29, 1),  # 15, 8, 4, 2, 1
    ],
)
def test_feature_map_side(side, out):
    model = _meta("densenet121").eval()
    feats = model.forward_features(torch.empty(1, 3, side, side, device="meta"))
    assert feats.shape == (1, 1024, out, out)


def _tiny(**kwargs) -> DenseNet:
    # The DenseNet class with few layers: same arithmetic as the variants, a fraction of the time.
    return DenseNet(8, (2, 2, 2, 2), 16, num_classes=5, in_chans=3, **kwargs)


def test_min_size_is_29():
    assert {cnnzoo.get_spec(f"densenet{d}").min_size for d in (121, 161, 169, 201)} == {29}
    model = _tiny().eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 29, 29)).shape == (1, 5)
        # 28 → 14 → 7 after the stem, then 3 → 1 → 0: the third transition's pool fails.
        with pytest.raises(RuntimeError, match="too small"):
            model(torch.rand(1, 3, 28, 28))


def test_stage_map_names_blocks_and_transitions_in_order():
    model = _meta("densenet121")
    assert list(model.stage_map) == [
        "stem",
        "denseblock1",
        "transition1",
        "denseblock2",
        "transition2",
        "denseblock3",
        "transition3",
        "denseblock4",
    ]
    assert model.stage_map["denseblock4"] == ["features.denseblock4", "features.norm5"]


def test_forward_features_ends_with_the_relu_torchvision_applies():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(feats, torch.relu(model.features.norm5(model.features[:-1](x))))
        assert feats.min() == 0  # the ReLU has cut something


def test_drop_rate_matches_torchvision_in_training():
    torch.manual_seed(0)
    reference = torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, num_classes=5, drop_rate=0.3)
    ours = _tiny(drop_rate=0.3)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    # The same dropout masks: both draw them layer by layer in the same order.
    torch.manual_seed(1)
    expected = reference(x)
    torch.manual_seed(1)
    got = ours(x)
    assert same_outputs(expected, got)
    torch.manual_seed(2)
    assert not torch.allclose(ours(x), got)  # dropout is really applied
    plain = _tiny()
    plain.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), plain.eval()(x))  # and off in eval


def test_builder_passes_drop_rate_to_every_layer():
    model = _meta("densenet161", drop_rate=0.2)
    rates = {m.drop_rate for m in model.modules() if isinstance(m, DenseLayer)}
    assert rates == {0.2}


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.2", True, None])
def test_bad_drop_rate(value):
    with pytest.raises(InvalidArgumentError, match="drop_rate"):
        cnnzoo.create_model("densenet121", drop_rate=value)


def test_memory_efficient_is_not_offered():
    with pytest.raises(TypeError, match="memory_efficient"):
        cnnzoo.create_model("densenet121", memory_efficient=True)
