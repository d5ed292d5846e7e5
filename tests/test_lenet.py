"""LeNet-5: the paper's layer sizes and C3 table, the options, and the masked C3 convolution.

References are the 1998 paper (Fig. 2 layer sizes, Table I connections, the per-layer parameter
counts of §II.B) and hand calculations, never numbers printed by the code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.analysis import count_params, summarize
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.layers import MinPool2d, StochasticPool2d
from cnnzoo.models.lenet import MaskedConv2d, ScaledTanh

# The paper's Table I as printed: rows are the 6 S2 maps, columns the 16 C3 maps, X = connected.
TABLE_I = (
    "X---XXX--XXXX-XX",
    "XX---XXX--XXXX-X",
    "XXX---XXX--X-XXX",
    "-XXX--XXXX--X-XX",
    "--XXX--XXXX-XX-X",
    "---XXX--XXXX-XXX",
)


def _lenet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model("lenet5", **kwargs)


def test_layer_sizes_follow_fig_2():
    with torch.device("meta"):
        model = cnnzoo.create_model("lenet5")
    shapes = {r.name: r.output_shape[1:] for r in summarize(model, (1, 32, 32)).layers}
    assert shapes["c1"] == (6, 28, 28)
    assert shapes["s2"] == (6, 14, 14)
    assert shapes["c3"] == (16, 10, 10)
    assert shapes["s4"] == (16, 5, 5)
    assert shapes["c5"] == (120, 1, 1)
    assert shapes["f6"] == (84,)
    assert shapes["output"] == (10,)


def test_c3_table_is_table_i():
    model = _lenet(c3_table=True)
    mask = model.c3.mask[:, :, 0, 0]  # (16 C3 maps, 6 S2 maps)
    expected = torch.tensor([[c == "X" for c in row] for row in TABLE_I], dtype=mask.dtype)
    assert torch.equal(mask.T, expected)
    assert int(mask.sum()) == 60
    # 6 maps read 3 contiguous S2 maps, 6 read 4 contiguous, 3 read 4 discontinuous, 1 reads 6.
    assert sorted(mask.sum(dim=1).int().tolist()) == [3] * 6 + [4] * 9 + [6]


def test_c3_table_parameter_counts():
    model = _lenet(c3_table=True)
    assert isinstance(model.c3, MaskedConv2d)
    assert model.c3.effective_params == 60 * 25 + 16 == 1_516
    # Stored densely: the state_dict and count_params see the full 16 × 6 × 5 × 5 + 16.
    assert count_params(model.c3) == 16 * 6 * 25 + 16 == 2_416
    assert count_params(model) == 61_706
    masked = count_params(model.c3) - model.c3.effective_params
    # Paper per-layer counts with a linear output and plain pools: C1 + C3 + C5 + F6 + output.
    assert count_params(model) - masked == 156 + 1_516 + 48_120 + 10_164 + 850 == 60_806


def test_c3_table_keeps_the_state_dict_of_a_plain_conv():
    dense, sparse = _lenet(), _lenet(c3_table=True)
    assert sparse.state_dict().keys() == dense.state_dict().keys()
    sparse.load_state_dict(dense.state_dict(), strict=True)


def test_masked_c3_computes_only_the_table_connections():
    c3 = _lenet(c3_table=True).c3
    x = torch.randn(2, 6, 14, 14)
    with torch.no_grad():
        c3.weight.normal_()  # even nonzero masked entries must not reach the output
        out = c3(x)
    for o in range(16):
        inputs = [i for i in range(6) if TABLE_I[i][o] == "X"]
        ref = F.conv2d(x[:, inputs], c3.weight[o : o + 1, inputs], c3.bias[o : o + 1])
        torch.testing.assert_close(out[:, o : o + 1], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_weights_start_at_zero_get_no_gradient_and_stay_zero(optimizer: str):
    model = _lenet(c3_table=True)
    off = model.c3.mask.expand_as(model.c3.weight) == 0
    assert int(off.sum()) == (96 - 60) * 25
    assert torch.all(model.c3.weight[off] == 0)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=1e-2)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
        assert torch.all(model.c3.weight.grad[off] == 0)
        assert model.c3.weight.grad[~off].abs().sum() > 0
        opt.step()
    assert torch.all(model.c3.weight[off] == 0)


def test_default_is_tanh_and_average_pooling():
    model = _lenet()
    assert isinstance(model.act1, nn.Tanh) and isinstance(model.act6, nn.Tanh)
    assert isinstance(model.s2, nn.AvgPool2d) and isinstance(model.s4, nn.AvgPool2d)
    assert type(model.c3) is nn.Conv2d


def test_scaled_tanh_is_the_paper_squashing_function():
    model = _lenet(act="scaled_tanh")
    assert isinstance(model.act3, ScaledTanh)
    a = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0])
    expected = torch.tensor([1.7159 * math.tanh(2 * v / 3) for v in a.tolist()])
    torch.testing.assert_close(model.act3(a), expected)
    # Appendix A: the constants make f(±1) = ±1.
    assert model.act3(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("act", "pool", "act_type", "pool_type"),
    [
        ("relu", "max", nn.ReLU, nn.MaxPool2d),
        ("tanh", "min", nn.Tanh, MinPool2d),
        ("relu", "stochastic", nn.ReLU, StochasticPool2d),
        ("scaled_tanh", "avg", ScaledTanh, nn.AvgPool2d),
    ],
)
def test_act_and_pool_options(act, pool, act_type, pool_type):
    model = _lenet(act=act, pool=pool, c3_table=True)
    assert isinstance(model.act1, act_type) and isinstance(model.act5, act_type)
    assert type(model.s2) is pool_type and type(model.s4) is pool_type
    for training in (True, False):
        out = model.train(training)(torch.randn(2, 1, 32, 32))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("act", ["tanh", "scaled_tanh"])
def test_stochastic_pooling_needs_relu(act: str):
    with pytest.raises(InvalidArgumentError, match="act='relu'"):
        cnnzoo.create_model("lenet5", act=act, pool="stochastic")


@pytest.mark.parametrize(("kwarg", "value"), [("act", "sigmoid"), ("pool", "lp")])
def test_unknown_act_or_pool(kwarg: str, value: str):
    with pytest.raises(InvalidArgumentError, match=kwarg):
        cnnzoo.create_model("lenet5", **{kwarg: value})


def test_fixed_input_range_is_32_to_35():
    with torch.device("meta"):
        model = cnnzoo.create_model("lenet5")
    for side in (32, 35):
        assert model(torch.empty(1, 1, side, side, device="meta")).shape == (1, 10)
    with pytest.raises(InputSizeError, match="32 to 35"):
        model(torch.empty(1, 1, 36, 36, device="meta"))
