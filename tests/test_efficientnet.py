"""EfficientNet: compound scaling, BatchNorm constants, stochastic depth and dropout.

Parameters and multiply-adds (at the paper resolution and at 224), default torchvision parity
and the size bounds are in the shared tests. Here the references are torchvision's builders (on
the meta device where only structure matters), the reference table's dropout column, and hand
calculations from the paper's Table 1.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import StochasticDepth, stochastic_depth

from cnnzoo import create_model
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import DropPath
from cnnzoo.models.efficientnet import MBConv
from tests.conftest import load_reference, same_outputs

VARIANTS = [f"efficientnet_b{i}" for i in range(8)]
REFERENCE = load_reference()


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _tv_meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)(**kwargs)


@pytest.mark.parametrize("name", VARIANTS)
def test_stage_repeats_match_torchvision(name: str) -> None:
    ours, tv = _meta(name), _tv_meta(name)
    assert [len(s) for s in ours.features[1:-1]] == [len(s) for s in tv.features[1:-1]]


def test_stage_repeats_by_hand() -> None:
    # ceil(layers * depth) of Table 1's (1, 2, 2, 3, 3, 4, 1) with B7's depth 3.1.
    assert [len(s) for s in _meta("efficientnet_b7").features[1:-1]] == [4, 7, 7, 10, 10, 13, 4]


@pytest.mark.parametrize(
    ("name", "features"),
    # 4 × make_divisible(320 × width, 8): the head widths of B0..B7.
    list(zip(VARIANTS, (1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560), strict=True)),
)
def test_head_width(name: str, features: int) -> None:
    model = _meta(name)
    assert model.num_features == features
    assert model.classifier[1].in_features == features


@pytest.mark.parametrize("name", VARIANTS)
def test_batchnorm_constants_match_torchvision(name: str) -> None:
    ours, tv = _meta(name), _tv_meta(name)
    ours_bn = {
        n: (m.eps, m.momentum) for n, m in ours.named_modules() if isinstance(m, nn.BatchNorm2d)
    }
    tv_bn = {n: (m.eps, m.momentum) for n, m in tv.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert ours_bn == tv_bn
    tf_style = name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
    assert set(ours_bn.values()) == {(1e-3, 0.01) if tf_style else (1e-5, 0.1)}


@pytest.mark.parametrize("name", VARIANTS)
def test_dropout_per_variant(name: str) -> None:
    ours, tv = _meta(name), _tv_meta(name)
    assert ours.classifier[0].p == REFERENCE[name]["dropout"] == tv.classifier[0].p
    assert _meta(name, dropout=0.1).classifier[0].p == 0.1


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b7"])
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.0])
def test_drop_path_probabilities_match_torchvision(name: str, rate: float) -> None:
    ours = _meta(name, drop_path_rate=rate)
    tv = _tv_meta(name, stochastic_depth_prob=rate)
    ours_p = [m.p for m in ours.modules() if isinstance(m, DropPath)]
    tv_p = [m.p for m in tv.modules() if isinstance(m, StochasticDepth)]
    assert ours_p == pytest.approx(tv_p, abs=1e-12)
    # Linear in the block index: rate * i / total, the first block never dropped.
    assert ours_p == pytest.approx([rate * i / len(ours_p) for i in range(len(ours_p))])


def test_drop_path_matches_torchvision_row_mode() -> None:
    x = torch.randn(64, 8, 3, 3)
    torch.manual_seed(0)
    expected = stochastic_depth(x, 0.3, "row", training=True)
    torch.manual_seed(0)
    got = DropPath(0.3).train()(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    assert torch.equal(DropPath(0.3).eval()(x), x)


def test_drop_path_drops_whole_samples_in_train_mode() -> None:
    torch.manual_seed(0)
    block = MBConv(16, 16, 6, 3, 1, drop_path=0.5, bn_eps=1e-5, bn_momentum=0.1)
    block.train()
    block.block.eval()  # BatchNorm on running statistics: the branch is deterministic
    x = torch.randn(32, 16, 4, 4)
    with torch.no_grad():
        branch = block.block(x)
        delta = block(x) - x
    dropped = [torch.equal(delta[n], torch.zeros_like(delta[n])) for n in range(len(x))]
    for n, is_dropped in enumerate(dropped):
        if not is_dropped:
            torch.testing.assert_close(delta[n], branch[n] / 0.5)
    assert 0 < sum(dropped) < len(x)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), branch + x)


def _random_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    # Non-trivial BatchNorm statistics and biases, so that outputs are not near zero.
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.1
    return state


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b5"])
def test_eval_parity_with_random_statistics(name: str) -> None:
    tv = getattr(torchvision.models, name)(num_classes=10).eval()
    ours = create_model(name, num_classes=10).eval()
    state = _random_state(tv, 0)
    tv.load_state_dict(state)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.abs().max() > 0.1
    assert same_outputs(expected, got)


@pytest.mark.parametrize("rate", [0.0, 0.2])
def test_train_mode_parity_same_seed(rate: float) -> None:
    # Same random draws in the same order: dropout, drop-path masks and batch statistics agree.
    tv = torchvision.models.efficientnet_b0(num_classes=10, stochastic_depth_prob=rate).train()
    ours = create_model("efficientnet_b0", num_classes=10, drop_path_rate=rate).train()
    state = _random_state(tv, 1)
    tv.load_state_dict(state)
    ours.load_state_dict(state)
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(3)
        expected = tv(x)
        torch.manual_seed(3)
        got = ours(x)
    assert same_outputs(expected, got)


def test_classifier_init_like_torchvision() -> None:
    model = create_model("efficientnet_b0", num_classes=7)
    bound = 1 / 7**0.5
    fc = model.get_classifier()
    assert fc.weight.abs().max() <= bound
    assert torch.equal(fc.bias, torch.zeros(7))
    model.reset_classifier(3)
    assert model.get_classifier().weight.abs().max() <= 1 / 3**0.5


@pytest.mark.parametrize("size", [1, 2, 33])
def test_small_odd_inputs(size: int) -> None:
    model = create_model("efficientnet_b0", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_path_rate": 1.0},
        {"drop_path_rate": -0.1},
        {"dropout": 1.0},
        {"dropout": -0.5},
        {"dropout": "0.2"},
        {"drop_path_rate": True},
    ],
)
def test_bad_option_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        _meta("efficientnet_b0", **kwargs)
