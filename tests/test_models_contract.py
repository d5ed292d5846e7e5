"""The model contract (DESIGN.md §3), checked for every registered model.

One real build per model (at ``in_chans=1`` and a non-default class count, the settings most
likely to expose a hard-coded 3 or 1000); shape checks at other settings run on the meta device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import check_input, count_params, model_macs
from cnnzoo.errors import (
    InputSizeError,
    InvalidArgumentError,
    UnknownArgumentError,
    UnknownModelError,
)
from cnnzoo.models.base import ZooModel
from tests.conftest import assert_window_too_large, failing_layer

NAMES = cnnzoo.list_models()


def _assert_refused_for_size(name: str, model: nn.Module, x: torch.Tensor, sizes) -> None:
    """``model(x)`` is refused because of the input's size: by the model's own check (an
    InputSizeError naming the model and the sizes it takes, or the size it got), or by torch at
    a convolution or pooling window that no longer fits its map. ``sizes`` is the spec or a
    ``(low, high)`` pair."""
    low, high = (sizes.min_size, sizes.max_size) if hasattr(sizes, "min_size") else sizes
    _, _, err = failing_layer(model, x)
    if isinstance(err, InputSizeError):
        text, side = str(err), x.shape[-1]
        assert text.startswith(name), text
        named = (f"{low} to {high}", f"{low}-{high}", f"{side}×{side}", f"({side}, {side})")
        assert any(n in text for n in named), text
    else:
        assert_window_too_large(model, x)


def test_registry_has_every_family_of_the_zoo():
    families = {cnnzoo.get_spec(n).family for n in NAMES}
    assert families == {
        "lenet", "alexnet", "vgg", "googlenet", "resnet", "densenet", "mobilenet",
        "efficientnet", "mlp",
    }  # fmt: skip
    required = [
        "lenet5", "alexnet", "alexnet_paper", "googlenet", "googlenet_paper", "mlp",
        "mobilenet_v1", "mobilenet_v2", "resnet18_cifar",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)),
        *(f"plain{d}" for d in (20, 32, 44, 56, 110)),
        *(f"densenet{d}" for d in (121, 161, 169, 201)),
        *(f"efficientnet_b{i}" for i in range(8)),
    ]  # fmt: skip
    assert not set(required) - set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str):
    spec = cnnzoo.get_spec(name)
    assert spec.paper and 1989 <= spec.year <= 2026
    assert spec.min_size <= spec.input_size[1] == spec.input_size[2]
    assert spec.max_size is None or spec.max_size >= spec.input_size[1]

    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=7, in_chans=1).eval()
    assert isinstance(model, ZooModel)
    assert model.num_classes == 7

    # Output (N, num_classes) at the smallest valid input, with real arithmetic.
    side = spec.min_size
    x = torch.rand(2, 1, side, side)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()

    # Just outside the valid range the model cannot run, for that reason and no other.
    if side > 1:
        _assert_refused_for_size(name, model, torch.rand(1, 1, side - 1, side - 1), spec)
    if spec.max_size is not None:
        with torch.no_grad():
            assert model(torch.rand(1, 1, spec.max_size, spec.max_size)).shape == (1, 7)
        big = spec.max_size + 1
        _assert_refused_for_size(name, model, torch.rand(1, 1, big, big), spec)

    # The head contract: forward = head(features), pre-logits width, the classifier, its reset.
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[0] == 2
        assert torch.equal(model.forward_head(feats), out)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert torch.allclose(model.get_classifier()(pre), out, rtol=1e-5, atol=1e-6)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (model.num_features, 7)
    model.reset_classifier(4)
    assert model.get_classifier() is not head
    assert model.get_classifier().out_features == 4
    with torch.no_grad():
        assert model(x).shape == (2, 4)

    # Stages name real modules of the backbone (never the classifier), each used once.
    stages = model.stages()
    assert len(stages) >= 2, "a model must name its stages, stem first"
    modules = [m for _, mods in stages for m in mods]
    assert len({id(m) for m in modules}) == len(modules)
    staged = {id(p) for m in modules for p in m.parameters()}
    assert not staged & {id(p) for p in model.get_classifier().parameters()}
    # Every parameter is in a stage, the classifier, or an auxiliary head (GoogLeNet's).
    classifier = {id(p) for p in model.get_classifier().parameters()}
    loose = [
        k for k, p in model.named_parameters()
        if id(p) not in staged | classifier and not k.startswith("aux")
    ]  # fmt: skip
    assert not loose, f"parameters in no stage: {loose[:4]}"
    first_conv = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert id(first_conv.weight) in staged, "the stem must be the first stage"

    # The default build on the meta device: shapes, and the registered counts.
    with torch.device("meta"):
        default = cnnzoo.create_model(name).eval()
        out = default(torch.empty(1, *spec.input_size))
    assert out.shape == (1, spec.num_classes)
    assert count_params(default) == spec.params
    assert model_macs(default, spec.input_size) == spec.macs


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        cnnzoo.create_model("resnet05")
    with pytest.raises(UnknownModelError, match="cnnzoo list"):
        cnnzoo.create_model("transformer")


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'depth'") as info:
        cnnzoo.create_model("resnet18", depth=19)
    assert isinstance(info.value, UnknownArgumentError)
    assert "stride_in_1x1" in str(info.value)  # and it says what the model does take


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "10"])
def test_num_classes_and_in_chans_must_be_positive_integers(value):
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        cnnzoo.create_model("resnet20", num_classes=value)
    with pytest.raises(InvalidArgumentError, match="in_chans"):
        cnnzoo.create_model("resnet20", in_chans=value)


@pytest.mark.parametrize(
    ("name", "option"),
    [(n, o) for n in NAMES for o in cnnzoo.get_spec(n).option_sizes],
)
def test_option_sizes_hold(name: str, option: str):
    spec = cnnzoo.get_spec(name)
    low, high = spec.option_sizes[option]
    # In training mode, so that option-dependent parts (GoogLeNet's aux heads) run.
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **{option: True}).train()
        model(torch.empty(2, 3, low, low))
        _assert_refused_for_size(name, model, torch.empty(2, 3, low - 1, low - 1), (low, high))
        if high is not None:
            model(torch.empty(2, 3, high, high))
            _assert_refused_for_size(
                name, model, torch.empty(2, 3, high + 1, high + 1), (low, high)
            )
    assert spec.size_range(**{option: True}) == (max(low, spec.min_size), high)
    with pytest.raises(InputSizeError, match=f"{low}-{high}"):
        check_input(name, (3, high + 1, high + 1), **{option: True})
    check_input(name, (3, high + 1, high + 1))  # without the option the size is fine
