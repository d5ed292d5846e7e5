"""Parameter counts and multiply-adds against the published reference table, on the meta device.

``params`` counts every trainable parameter (BatchNorm weight and bias included, running
statistics not); ``macs`` counts the multiply-adds of Conv2d and Linear layers at the reference
input with batch 1 — torchvision's "GFLOPS" column is this number in billions.
"""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.analysis import count_params, model_macs
from tests.conftest import load_reference, printed_as

REFERENCE = load_reference()
# Entries the reference marks optional (MobileNet v3) are checked once they are registered.
NAMES = [n for n, r in REFERENCE.items() if not r.get("optional") or n in cnnzoo.list_models()]


def _meta(name: str, **kwargs) -> torch.nn.Module:
    classes = REFERENCE[name].get("num_classes", 1000)
    with torch.device("meta"):
        return cnnzoo.create_model(name, num_classes=classes, **kwargs)


def test_every_reference_model_is_registered():
    required = [n for n, r in REFERENCE.items() if not r.get("optional")]
    assert set(required) <= set(cnnzoo.list_models())


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_equal_reference(name: str):
    ref = REFERENCE[name]
    model = _meta(name)
    assert count_params(model) == ref["params"]
    assert model_macs(model, tuple(ref["input"])) == ref["macs"]
    if "macs_224" in ref:
        assert model_macs(model, (3, 224, 224)) == ref["macs_224"]


@pytest.mark.parametrize("name", [n for n in NAMES if "params_with_aux" in REFERENCE[n]])
def test_params_with_auxiliary_heads(name: str):
    assert count_params(_meta(name, aux_logits=True)) == REFERENCE[name]["params_with_aux"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_agrees_with_reference(name: str):
    ref, spec = REFERENCE[name], cnnzoo.get_spec(name)
    assert spec.input_size == tuple(ref["input"])
    assert spec.num_classes == ref.get("num_classes", 1000)
    assert spec.family == ref["family"]
    if "min_input" in ref:
        assert spec.min_size == ref["min_input"]


@pytest.mark.parametrize(
    ("name", "stride_in_1x1", "macs"),
    [
        # REFERENCE.md §0.4: the paper's v1 (stride in the first 1×1) costs fewer multiply-adds.
        ("resnet50", True, 3_857_973_248),
        ("resnet101", True, 7_570_194_432),
        ("resnet152", True, 11_282_415_616),
    ],
)
def test_resnet_v1_placement(name: str, stride_in_1x1: bool, macs: int):
    model = _meta(name, stride_in_1x1=stride_in_1x1)
    assert count_params(model) == REFERENCE[name]["params"]
    assert model_macs(model, (3, 224, 224)) == macs


# --- rows the reference computed by building the architecture, against the papers -----------
# The reference table's figures for the CIFAR ResNets (and the plain nets, which it does not
# list) were computed by building the networks, so matching them alone would only show that
# the code has not changed. Here they are worked out by hand from the paper's description and
# compared with what the paper prints, at its rounding.

# He et al. 2015, "Deep residual learning for image recognition" (arXiv:1512.03385), Table 6:
# "# params" of the CIFAR-10 ResNets, as printed (millions).
RESNET_CIFAR_TABLE_6 = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7"}


def _cifar_resnet_by_hand(depth: int) -> tuple[int, int]:
    """(params, MACs at 32×32) from §4.2: a 3×3 convolution of 16 filters, then 6n 3×3
    convolutions (n = (depth − 2)/6), 2n each with 16, 32 and 64 filters on 32, 16 and 8 px
    maps (stride 2 where the maps halve), global average pooling and a 10-way fully connected
    layer. Each convolution is followed by BatchNorm (γ and β; no convolution bias), and the
    option A shortcuts have no parameters and no multiply-adds."""
    n = (depth - 2) // 6
    params, macs = 3 * 9 * 16 + 2 * 16, 32 * 32 * 16 * (3 * 9)
    chans = 16
    for width, side in ((16, 32), (32, 16), (64, 8)):
        for i in range(2 * n):
            fan_in = (chans if i == 0 else width) * 9
            params += fan_in * width + 2 * width
            macs += side * side * width * fan_in
        chans = width
    return params + 64 * 10 + 10, macs + 64 * 10


@pytest.mark.parametrize("depth", sorted(RESNET_CIFAR_TABLE_6))
def test_cifar_resnets_and_plain_nets_are_the_papers(depth: int):
    params, macs = _cifar_resnet_by_hand(depth)
    assert printed_as(params / 1e6, RESNET_CIFAR_TABLE_6[depth])
    assert (params, macs) == (
        REFERENCE[f"resnet{depth}"]["params"],
        REFERENCE[f"resnet{depth}"]["macs"],
    )
    # §4.2: "our residual models have exactly the same depth, width, and number of parameters
    # as the plain counterparts".
    for name in (f"resnet{depth}", f"plain{depth}"):
        with torch.device("meta"):
            model = cnnzoo.create_model(name, num_classes=10)
        assert count_params(model) == params, name
        assert model_macs(model, (3, 32, 32)) == macs, name
        assert cnnzoo.get_spec(name).params == params, name
