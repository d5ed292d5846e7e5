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
from tests.conftest import load_reference

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
