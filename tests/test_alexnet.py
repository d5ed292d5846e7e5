"""AlexNet: the 2012 paper's constants (LRN, grouping, layer sizes, initialisation), the
``groups=1`` network, and torchvision parity beyond the default settings.

References: the paper's text (kernel shapes of §3.5, LRN formula of §3.3, initialisation of
§5), REFERENCE.md §3.2 (ungrouped counts) and torchvision itself.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.analysis import count_params, model_macs, summarize
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.layers import paper_lrn
from tests.conftest import assert_window_too_large, failing_layer, load_reference, same_outputs


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def _paper_lrn_by_hand(a: torch.Tensor, k=2.0, n=5, alpha=1e-4, beta=0.75) -> torch.Tensor:
    # §3.3: b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = (a[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, i] = a[:, i] / (k + alpha * total) ** beta
    return out


def test_paper_lrn_is_the_paper_formula():
    torch.manual_seed(0)
    a = torch.randn(2, 7, 3, 3, dtype=torch.float64) * 40  # large enough that alpha matters
    expected = _paper_lrn_by_hand(a)
    torch.testing.assert_close(paper_lrn()(a), expected)
    # torch's own alpha convention (alpha / n) with the paper's number gives a different layer.
    wrong = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)(a)
    assert not torch.allclose(wrong, expected)


def test_lrn_follows_relu_of_conv1_and_conv2_then_overlapping_pool():
    model = _meta("alexnet_paper")
    kinds = [type(m) for m in model.features]
    conv, relu, lrn, pool = nn.Conv2d, nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d
    assert kinds == [
        conv, relu, lrn, pool,  # conv1
        conv, relu, lrn, pool,  # conv2
        conv, relu, conv, relu,  # conv3, conv4
        conv, relu, pool,  # conv5
    ]  # fmt: skip
    a = torch.randn(1, 9, 4, 4, dtype=torch.float64) * 30
    for i in (2, 6):
        torch.testing.assert_close(model.features[i](a), _paper_lrn_by_hand(a))
    for m in model.features:
        if isinstance(m, nn.MaxPool2d):
            assert (m.kernel_size, m.stride) == (3, 2)  # z = 3 > s = 2: overlapping


def test_kernels_and_grouping_follow_the_paper():
    convs = _convs(_meta("alexnet_paper"))
    # §3.5: 96 kernels 11×11×3, 256 of 5×5×48, 384 of 3×3×256, 384 of 3×3×192, 256 of 3×3×192.
    assert [tuple(c.weight.shape) for c in convs] == [
        (96, 3, 11, 11),
        (256, 48, 5, 5),
        (384, 256, 3, 3),
        (384, 192, 3, 3),
        (256, 192, 3, 3),
    ]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [(c.stride[0], c.padding[0]) for c in convs] == [(4, 0), (1, 2), (1, 1), (1, 1), (1, 1)]


def test_feature_map_sizes_at_227():
    rows = summarize(_meta("alexnet_paper"), (3, 227, 227)).layers
    convs = [r.output_shape[1:] for r in rows if r.type == "Conv2d"]
    assert convs == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]
    fcs = [r.output_shape[1:] for r in rows if r.type == "Linear"]
    assert fcs == [(4096,), (4096,), (1000,)]
    assert rows[[r.type for r in rows].index("Linear") - 1].output_shape[1:] == (256, 6, 6)


def test_per_layer_parameters():
    # K (F² C / groups + 1) per conv, (in + 1) out per FC.
    model = _meta("alexnet_paper")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [count_params(m) for m in layers] == [
        96 * (11 * 11 * 3 + 1),
        256 * (5 * 5 * 48 + 1),
        384 * (3 * 3 * 256 + 1),
        384 * (3 * 3 * 192 + 1),
        256 * (3 * 3 * 192 + 1),
        4096 * (9216 + 1),
        4096 * (4096 + 1),
        1000 * (4096 + 1),
    ]


def test_the_papers_own_figures():
    """What the 2012 paper prints of its network's size: "60 million parameters" (abstract) and,
    in Figure 2's caption, "the number of neurons in the network's remaining layers is given by
    253,440–186,624–64,896–64,896–43,264–4096–4096–1000". It prints no multiply-add count: the
    reference's 724,406,816 is worked out here from the figures it does print."""
    model = _meta("alexnet_paper")
    params = count_params(model)
    assert 60e6 <= params < 61e6  # 60.97 M (the ungrouped network would be 62.4 M)
    rows = summarize(model, (3, 227, 227)).layers
    neurons = [math.prod(r.output_shape[1:]) for r in rows if r.type in ("Conv2d", "Linear")]
    # conv1's 253,440 is a known slip of the caption: 55 × 55 × 96 = 290,400 (55 px at 227).
    assert neurons == [55 * 55 * 96, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
    # Multiply-adds = Σ neurons × kernel volume (§3.5: 11×11×3, 5×5×48, 3×3×256, 3×3×192,
    # 3×3×192; fc6 reads the 6×6×256 maps).
    fan_in = [11 * 11 * 3, 5 * 5 * 48, 3 * 3 * 256, 3 * 3 * 192, 3 * 3 * 192, 6 * 6 * 256,
              4096, 4096]  # fmt: skip
    by_hand = sum(n * f for n, f in zip(neurons, fan_in, strict=True))
    assert by_hand == 724_406_816 == load_reference()["alexnet_paper"]["macs"]
    assert model_macs(model, (3, 227, 227)) == by_hand


def test_groups_1_is_the_single_gpu_network():
    model = _meta("alexnet_paper", groups=1)
    assert [c.groups for c in _convs(model)] == [1] * 5
    assert tuple(_convs(model)[1].weight.shape) == (256, 96, 5, 5)
    assert count_params(model) == 62_378_344
    assert model_macs(model, (3, 227, 227)) == 1_135_256_096


@pytest.mark.parametrize("groups", [0, 3, 4, True, "2"])
def test_bad_groups(groups):
    with pytest.raises(InvalidArgumentError, match="groups"):
        cnnzoo.create_model("alexnet_paper", groups=groups)


@pytest.mark.parametrize(("name", "dropout"), [("alexnet", 1.0), ("alexnet_paper", -0.1)])
def test_bad_dropout(name: str, dropout: float):
    with pytest.raises(InvalidArgumentError, match="dropout"):
        cnnzoo.create_model(name, dropout=dropout)


def test_paper_initialisation():
    torch.manual_seed(0)
    model = cnnzoo.create_model("alexnet_paper", num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # §5: N(0, 0.01) weights; biases 1 in conv2, conv4, conv5 and the hidden FCs, 0 elsewhere.
    expected_bias = [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    for layer, bias in zip(layers, expected_bias, strict=True):
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3
        assert w.std().item() == pytest.approx(0.01, rel=0.05)
        assert torch.all(layer.bias == bias)


def test_dropout_placement():
    paper, tv = _meta("alexnet_paper", dropout=0.3), _meta("alexnet")
    # Paper §4.2: dropout on the outputs of fc6 and fc7; torchvision: on their inputs.
    lin, relu, drop = nn.Linear, nn.ReLU, nn.Dropout
    assert [type(m) for m in paper.classifier] == [lin, relu, drop, lin, relu, drop, lin]
    assert [type(m) for m in tv.classifier] == [drop, lin, relu, drop, lin, relu, lin]
    assert [m.p for m in paper.classifier if isinstance(m, drop)] == [0.3, 0.3]


def test_paper_input_range_is_227_to_258():
    model = _meta("alexnet_paper")
    for side in (227, 258):
        assert model(torch.empty(1, 3, side, side, device="meta")).shape == (1, 1000)
    for side in (226, 259):
        with pytest.raises(InputSizeError, match="227 to 258"):
            model(torch.empty(1, 3, side, side, device="meta"))


def test_torchvision_min_size_is_63():
    # W' = floor((W - 11 + 4)/4) + 1, then three 3/2 max-pools: 63 → 15 → 7 → 3 → 1.
    model = _meta("alexnet")
    assert model(torch.empty(1, 3, 63, 63, device="meta")).shape == (1, 1000)
    # 62 → 14 → 6 → 2: the third pool is the one that fails, on its 2×2 input.
    name, shape, _ = failing_layer(model, torch.empty(1, 3, 62, 62, device="meta"))
    assert name == "features.12" and isinstance(model.features[12], nn.MaxPool2d)
    assert shape[-2:] == (2, 2)
    assert_window_too_large(model, torch.empty(1, 3, 62, 62, device="meta"))


def test_torchvision_parity_with_other_classes_dropout_and_a_non_square_input():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(num_classes=10, dropout=0.25).eval()
    ours = cnnzoo.create_model("alexnet", num_classes=10, dropout=0.25).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    assert [m.p for m in ours.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    x = torch.randn(2, 3, 70, 97)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert same_outputs(expected, got)
    with torch.no_grad():
        pre = ours.forward_head(ours.forward_features(x), pre_logits=True)
    assert same_outputs(ours.classifier[6](pre), expected)
