"""Receptive fields from the recurrence against a brute-force measure.

The brute force: the bounding box of the input pixels whose gradient is non-zero for one
centre output unit. A gradient can hide pixels that the unit does see (behind a max-pool only
the arg-max gets one, behind a ReLU only positive units, behind cancelling weights none), so
the probe makes every path positive: weights and input positive, biases zero, BatchNorm as the
identity and every max-pool swapped for an average pool of the same geometry.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import formulas
from cnnzoo.analysis.summary import summarize


def _positive(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            pool = nn.AvgPool2d(
                module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode
            )
            model.set_submodule(name, pool)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            nn.init.constant_(module.weight, 1.0 / fan_in)  # keeps activations near 1
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()  # γ = 1, β = 0, mean 0, variance 1: the identity
    return model.eval()


def _brute_force(model: nn.Module, layer: str, size: tuple[int, int, int]) -> tuple[int, int]:
    outputs: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: outputs.append(o))
    x = torch.ones(1, *size, requires_grad=True)
    model(x)
    handle.remove()
    out = outputs[-1]
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


def _recurrence(model: nn.Module, layer: str, size: tuple[int, int, int]) -> tuple[int, int]:
    rows = [r for r in summarize(model, size).layers if r.name == layer]
    return rows[-1].rf_size


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, stride=2), nn.Conv2d(2, 1, 3)],
        [nn.Conv2d(1, 2, 5, padding=2), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, dilation=2)],
        [nn.Conv2d(1, 2, 3, stride=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.Conv2d(2, 1, 3)],
        [nn.Conv2d(1, 2, (3, 5)), nn.ReLU(), nn.AvgPool2d(2, 1), nn.Conv2d(2, 1, 1, stride=3)],
    ],
)
def test_small_stacks(layers: list[nn.Module]):
    model = _positive(nn.Sequential(*layers))
    last = str(len(layers) - 1)
    size = (1, 41, 41)
    assert _recurrence(model, last, size) == _brute_force(model, last, size)


def test_recurrence_by_hand():
    # Two 3×3 convolutions then a 2×2/2 pool then a 3×3: 3, 5, 6 (jump 2), 10.
    r, j = 1, 1
    for k, s in ((3, 1), (3, 1), (2, 2), (3, 1)):
        r, j = formulas.receptive_field(r, j, k, s)
    assert (r, j) == (10, 2)


@pytest.mark.parametrize(
    ("name", "layer", "side"),
    [
        ("resnet20", "layer3.2.bn2", 129),  # option-A shortcuts: strided slices and padding
        ("resnet18", "layer2.1.bn2", 129),  # projections; before the final add
        ("vgg11", "features.10", 81),
        ("googlenet", "inception3b.branch3.1.conv", 161),  # concatenated branches
        ("densenet121", "features.denseblock1.denselayer3.conv2", 81),
        ("mobilenet_v2", "features.4.conv.2", 121),  # depthwise, inverted residuals
    ],
)
def test_zoo_models(name: str, layer: str, side: int):
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=10)
    model = _positive(model.to_empty(device="cpu"))
    size = (3, side, side)
    expected = _recurrence(model, layer, size)
    assert expected[0] < side  # the probe is not clipped by the image border
    assert expected == _brute_force(model, layer, size)
