"""MobileNet v1/v2/v3: the width and resolution multipliers, the paper tables, the options.

Default parameters, multiply-adds, torchvision parity and the min-size forward are in the shared
tests; here are the MobileNet-specific facts against the reference table, hand calculations and
torchvision at other widths.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.analysis import count_params, model_macs
from cnnzoo.errors import InvalidArgumentError
from tests.conftest import load_reference, printed_as, same_outputs

V1 = load_reference()["mobilenet_v1"]


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


# Howard et al. 2017, "MobileNets" (arXiv:1704.04861), as printed: Table 6 (width multiplier α
# at 224 px) "Million Parameters" and "Million Mult-Adds", and Table 7 (input side at α = 1)
# "Million Mult-Adds". The reference table's exact counts were computed by building the network;
# these are the paper's own figures.
PAPER_TABLE_6 = {"1.0": ("4.2", "569"), "0.75": ("2.6", "325"), "0.5": ("1.3", "149"),
                 "0.25": ("0.5", "41")}  # fmt: skip
PAPER_TABLE_7 = {"224": "569", "192": "418", "160": "290", "128": "186"}


@pytest.mark.parametrize("alpha", sorted(V1["width_multiplier"]))
def test_v1_width_multiplier(alpha: str):
    ref = V1["width_multiplier"][alpha]
    model = _meta("mobilenet_v1", width_mult=float(alpha))
    params, macs = count_params(model), model_macs(model, (3, 224, 224))
    paper_params, paper_macs = PAPER_TABLE_6[alpha]
    assert printed_as(params / 1e6, paper_params) and printed_as(macs / 1e6, paper_macs)
    assert (params, macs) == (ref["params"], ref["macs"])
    assert model.num_features == round(1024 * float(alpha))


@pytest.mark.parametrize("side", sorted(V1["resolution_multiplier"]))
def test_v1_resolution_multiplier(side: str):
    s = int(side)
    model = _meta("mobilenet_v1")
    macs = model_macs(model, (3, s, s))
    assert macs == V1["resolution_multiplier"][side]
    paper = PAPER_TABLE_7[side]
    if side == "160":
        # 290.68 M: the paper prints 290, cut rather than rounded (569 for 568.74 is rounded).
        assert int(macs / 1e6) == int(paper)
    else:
        assert printed_as(macs / 1e6, paper)
    assert printed_as(count_params(model) / 1e6, "4.2")  # Table 7: the side changes no parameter


def test_v1_weights_without_batchnorm_are_the_papers_4_2_million():
    # REFERENCE.md §3.7: 4,231,976 minus BN γ and β over 10,944 channels = 4,210,088 ≈ 4.2 M.
    model = _meta("mobilenet_v1")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn = sum(p.numel() for m in norms for p in m.parameters())
    assert bn == 2 * 10_944
    assert count_params(model) - bn == 4_210_088


def test_v1_follows_table_1():
    model = _meta("mobilenet_v1").eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    sides, widths = [], []
    for block in model.features:
        x = block(x)
        sides.append(x.shape[-1])
        widths.append(x.shape[1])
    # Table 1: conv/s2 to 112×112×32, then 13 dw/pw pairs (the last dw is stride 1 on 7×7).
    assert sides == [112, 112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
    assert widths == [32, 64, 128, 128, 256, 256, *[512] * 6, 1024, 1024]
    assert len([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]) == 28


def test_v1_stages_are_timms_blocks():
    # timm's mobilenetv1_100 groups the 13 pairs as dsa_r1, r2, r2, r6, r2 (blocks.0 … blocks.4).
    stages = _meta("mobilenet_v1").stage_map
    assert list(stages) == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"]
    assert [len(stages[f"stage{i}"]) for i in range(1, 6)] == [1, 2, 2, 6, 2]


def test_v1_width_rounding_to_multiples_of_8():
    # By hand, α = 0.6: stem 32·0.6 = 19.2 → 16 is more than 10% down → 24; 64·0.6 = 38.4 → 40;
    # 1024·0.6 = 614.4 → 616.
    model = _meta("mobilenet_v1", width_mult=0.6)
    assert model.features[0][0].out_channels == 24
    assert model.features[1].pw[0].out_channels == 40
    assert model.num_features == 616


def test_v1_activation_option():
    default = _meta("mobilenet_v1")
    paper = _meta("mobilenet_v1", activation="relu")
    assert sum(isinstance(m, nn.ReLU6) for m in default.modules()) == 27
    assert not any(isinstance(m, nn.ReLU6) for m in paper.modules())
    assert sum(type(m) is nn.ReLU for m in paper.modules()) == 27
    assert count_params(paper) == count_params(default)


def test_v1_dropout_only_in_training_and_not_in_pre_logits():
    torch.manual_seed(0)
    model = cnnzoo.create_model("mobilenet_v1", num_classes=10, width_mult=0.25, dropout=0.5)
    assert model.dropout.p == 0.5
    assert cnnzoo.create_model("mobilenet_v1", width_mult=0.25).dropout.p == 0.0
    feats = torch.rand(2, model.num_features, 1, 1)
    model.train()
    pre = model.forward_head(feats, pre_logits=True)
    assert torch.equal(pre, feats.flatten(1))
    assert not torch.allclose(model.forward_head(feats), model.classifier(pre))
    model.eval()
    assert torch.equal(model.forward_head(feats), model.classifier(pre))


@pytest.mark.parametrize(
    ("name", "width_mult"),
    [
        ("mobilenet_v2", 0.35),
        ("mobilenet_v2", 1.4),
        ("mobilenet_v3_large", 0.75),
        ("mobilenet_v3_small", 1.25),
    ],
)
def test_torchvision_parity_at_other_widths(name: str, width_mult: float):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(num_classes=10, width_mult=width_mult).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ours = cnnzoo.create_model(name, num_classes=10, width_mult=width_mult).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert same_outputs(reference(x), ours(x))


def test_v2_follows_table_2():
    model = _meta("mobilenet_v2").eval()
    # Table 2: 17 bottlenecks (1+2+3+4+3+3+1) between the stem and the 1×1 conv to 1280.
    assert len(model.features) == 1 + 17 + 1
    assert model.features(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1280, 7, 7)
    shortcuts = [i for i, b in enumerate(model.features) if getattr(b, "use_res_connect", 0)]
    # A shortcut in every repeat after the first of a row: n − 1 per row, 10 in all.
    assert shortcuts == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert model.classifier[0].p == 0.2  # torchvision's default


def test_v3_squeeze_excitation_uses_a_hard_sigmoid():
    model = _meta("mobilenet_v3_small")
    gates = [m for m in model.modules() if hasattr(m, "scale_activation")]
    assert len(gates) == 9  # Table 2: SE in 9 of the 11 bneck rows
    assert all(isinstance(g.scale_activation, nn.Hardsigmoid) for g in gates)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small"])
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"width_mult": 0}, "width_mult"),
        ({"width_mult": -0.5}, "width_mult"),
        ({"width_mult": float("nan")}, "width_mult"),
        ({"width_mult": "1.0"}, "width_mult"),
        ({"width_mult": True}, "width_mult"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": None}, "dropout"),
    ],
)
def test_bad_options(name: str, kwargs: dict, arg: str):
    with pytest.raises(InvalidArgumentError, match=arg):
        cnnzoo.create_model(name, **kwargs)


def test_bad_v1_activation():
    with pytest.raises(InvalidArgumentError, match="activation"):
        cnnzoo.create_model("mobilenet_v1", activation="gelu")
