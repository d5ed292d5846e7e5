"""VGG: the paper's configurations, the pooling and dropout options, and the checkpoint format
that the options keep.

References: the paper's Table 1 (configurations A, B, D, E: 3×3 convolutions, five 2×2/2
max-pools, FC 4096-4096-classes), REFERENCE.md §3.3 and torchvision itself.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import MinPool2d, StochasticPool2d
from tests.conftest import assert_window_too_large, failing_layer

# Table 1 of the paper: conv widths of each configuration, stage by stage.
PAPER_TABLE = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "min": MinPool2d, "stochastic": StochasticPool2d}


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


@pytest.mark.parametrize("depth", PAPER_TABLE)
@pytest.mark.parametrize("bn", ["", "_bn"])
def test_stages_are_the_papers_columns(depth: int, bn: str):
    model = _meta(f"vgg{depth}{bn}")
    blocks = [f"block{i}" for i in range(1, 6)]
    assert list(model.stage_map) == [*blocks, "fc"]
    assert model.stage_map["fc"] == ["classifier.0", "classifier.3"]  # FC6, FC7
    widths = []
    for paths in (model.stage_map[b] for b in blocks):
        mods = [model.get_submodule(p) for p in paths]
        convs = [m for m in mods if isinstance(m, nn.Conv2d)]
        for c in convs:
            assert (c.kernel_size, c.stride, c.padding) == ((3, 3), (1, 1), (1, 1))
        widths.append([c.out_channels for c in convs])
        assert isinstance(mods[-1], nn.MaxPool2d)  # each block ends with its pool
        assert sum(isinstance(m, nn.BatchNorm2d) for m in mods) == (len(convs) if bn else 0)
    assert widths == PAPER_TABLE[depth]
    # "depth" counts weight layers: the convolutions and the three FC layers.
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert sum(map(len, widths)) + len(linears) == depth
    assert [(fc.in_features, fc.out_features) for fc in linears] == [
        (512 * 7 * 7, 4096),
        (4096, 4096),
        (4096, 1000),
    ]
    # The conv stages cover `features` exactly, in order.
    paths = [p for b in blocks for p in model.stage_map[b]]
    assert paths == [f"features.{i}" for i in range(len(model.features))]


@pytest.mark.parametrize("pool", list(POOLS))
def test_pool_option_replaces_the_five_pools_and_keeps_the_checkpoint_format(pool: str):
    model = _meta("vgg16_bn", pool=pool)
    pools = [m for m in model.features if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU))]
    assert len(pools) == 5
    for p in pools:
        assert type(p) is POOLS[pool]
        assert (p.kernel_size, p.stride) == (2, 2)
    # Each pool follows a ReLU, so stochastic pooling always sees non-negative inputs.
    for i, m in enumerate(model.features):
        if m in pools:
            assert isinstance(model.features[i - 1], nn.ReLU)
    with torch.device("meta"):
        reference = torchvision.models.vgg16_bn()
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    feats = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
    assert feats.shape == (1, 512, 7, 7)  # 224 / 2⁵


def test_stochastic_pool_runs_in_training_and_eval():
    torch.manual_seed(0)
    model = cnnzoo.create_model("vgg11_bn", num_classes=3, pool="stochastic")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.train()(x).shape == (2, 3)
        out = model.eval()(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_min_size_is_what_five_halvings_allow():
    # 32 / 2⁵ = 1; a side of 31 reaches the last pool as 1 and leaves it as 0.
    model = _meta("vgg11")
    assert model.forward_features(torch.empty(1, 3, 32, 32, device="meta")).shape[-2:] == (1, 1)
    pools = [n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5
    # It is the fifth pool that fails, on its 1×1 input — not some other layer or mismatch.
    name, shape, _ = failing_layer(model.features, torch.empty(1, 3, 31, 31, device="meta"))
    assert f"features.{name}" == pools[-1] and shape[-2:] == (1, 1)
    assert_window_too_large(model.features, torch.empty(1, 3, 31, 31, device="meta"))
    assert cnnzoo.get_spec("vgg11").min_size == 32
    assert cnnzoo.get_spec("vgg11").max_size is None


def test_dropout_option():
    assert [m.p for m in _meta("vgg13").classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    model = _meta("vgg13", dropout=0.25)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.25]


def test_bad_pool_is_rejected():
    with pytest.raises(InvalidArgumentError, match="pool"):
        _meta("vgg11", pool="median")


@pytest.mark.parametrize("value", [1.0, -0.1, True])
def test_bad_dropout_is_rejected(value):
    with pytest.raises(InvalidArgumentError, match="dropout"):
        _meta("vgg11", dropout=value)
