"""torchvision parity: for every architecture torchvision has, its state_dict loads into ours with
``strict=True`` and both give the same eval outputs (|Δ| ≤ 1e-5 · max(1, max |y|))."""

from __future__ import annotations

import pytest
import torch
import torchvision

import cnnzoo
from tests.conftest import same_outputs

SHARED = [n for n in cnnzoo.list_models() if cnnzoo.get_spec(n).torchvision]
# torchvision's GoogLeNet builds its auxiliary heads unless told not to; ours are opt-in.
TORCHVISION_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}}


def test_every_shared_architecture_is_covered():
    expected = {
        "alexnet", "googlenet", "mobilenet_v2",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        *(f"densenet{d}" for d in (121, 161, 169, 201)),
        *(f"efficientnet_b{i}" for i in range(8)),
    }  # fmt: skip
    assert expected <= set(SHARED)


@pytest.mark.parametrize("name", SHARED)
def test_torchvision_state_dict_loads_strictly_and_gives_same_outputs(name: str):
    spec = cnnzoo.get_spec(name)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, spec.torchvision)
    reference = reference(num_classes=10, **TORCHVISION_KWARGS.get(name, {})).eval()
    ours = cnnzoo.create_model(name, num_classes=10).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    # Random BatchNorm statistics, so that a mix-up of running mean and variance would show.
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(reference.state_dict(), strict=True)
    side = max(spec.min_size, 64)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (2, 10)
    assert same_outputs(expected, got)
