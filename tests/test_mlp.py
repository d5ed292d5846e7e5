"""The fully-connected baseline: hand-computed counts, the hidden/dropout options, the
features/head split and the fixed input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import count_params, model_macs
from cnnzoo.errors import InputSizeError, InvalidArgumentError


def _meta(**kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model("mlp", **kwargs)


def test_default_is_300_100_on_32x32():
    model = _meta()
    assert cnnzoo.get_spec("mlp").input_size == (1, 32, 32)
    widths = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [(1024, 300), (300, 100), (100, 10)]
    assert count_params(model) == 1024 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 338_610
    assert model_macs(model, (1, 32, 32)) == 1024 * 300 + 300 * 100 + 100 * 10 == 338_200


def test_hidden_option_and_in_chans():
    model = _meta(hidden=(500, 150, 50), in_chans=3, num_classes=7)
    assert count_params(model) == (
        3 * 1024 * 500 + 500 + 500 * 150 + 150 + 150 * 50 + 50 + 50 * 7 + 7
    )
    assert model.num_features == 50
    assert list(model.stage_map) == ["hidden1", "hidden2", "hidden3"]
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 7)


def test_features_are_the_last_hidden_activation_and_the_head_is_one_linear():
    torch.manual_seed(0)
    model = cnnzoo.create_model("mlp", hidden=(64, 32)).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (3, 32)
        assert torch.all(feats >= 0)  # after a ReLU
        assert torch.equal(model.forward_head(feats, pre_logits=True), feats)
        h = torch.relu(model.hidden[0](x.flatten(1)))
        h = torch.relu(model.hidden[3](h))
        torch.testing.assert_close(model(x), model.fc(h))


def test_dropout_option():
    torch.manual_seed(0)
    model = cnnzoo.create_model("mlp", dropout=0.5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))  # dropout active in training
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("hidden", [(), (0,), (300, -1), (2.5,), (True,)])
def test_bad_hidden(hidden):
    with pytest.raises(InvalidArgumentError, match="hidden"):
        cnnzoo.create_model("mlp", hidden=hidden)


@pytest.mark.parametrize("dropout", [1.0, -0.5, "0.1"])
def test_bad_dropout(dropout):
    with pytest.raises(InvalidArgumentError, match="dropout"):
        cnnzoo.create_model("mlp", dropout=dropout)


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (1, 1, 33, 33), (1, 3, 32, 32)])
def test_only_the_configured_input_shape_is_accepted(shape):
    with pytest.raises(InputSizeError, match="1×32×32"):
        _meta()(torch.empty(shape, device="meta"))
