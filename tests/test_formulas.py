"""The textbook formulas, by hand and against real torch layers (property-based)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnzoo.analysis import formulas


def test_output_size_by_hand():
    # AlexNet conv1 (torchvision): ⌊(224 − 11 + 2·2)/4⌋ + 1 = 55
    assert formulas.conv_output_size(224, 11, 4, 2) == 55
    # alexnet_paper conv1: ⌊(227 − 11)/4⌋ + 1 = 55; its 3×3/2 pool: ⌊(55 − 3)/2⌋ + 1 = 27
    assert formulas.conv_output_size(227, 11, 4) == 55
    assert formulas.conv_output_size(55, 3, 2) == 27
    # a dilated 3×3 (extent 5) on 7: ⌊(7 − 5)/1⌋ + 1 = 3
    assert formulas.conv_output_size(7, 3, dilation=2) == 3
    # GoogLeNet's ceil-mode 3×3/2 pool still fits one window on a 2-pixel map
    assert formulas.conv_output_size(2, 3, 2, ceil_mode=True) == 1
    assert formulas.conv_output_size(2, 3, 2) == 0


def test_params_and_macs_by_hand():
    assert formulas.conv_params(3, 64, 11) == 64 * (11 * 11 * 3 + 1) == 23_296
    assert formulas.conv_params(48, 128, 5, groups=2, bias=True) == 128 * (25 * 24 + 1)
    assert formulas.linear_params(9216, 4096) == 4096 * 9217
    assert formulas.conv_macs(3, 64, 11, 55, 55) == 64 * 55 * 55 * 363
    assert formulas.linear_macs(400, 120) == 48_000


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_conv_output_size_matches_torch(size, kernel, stride, padding, dilation):
    expected = formulas.conv_output_size(size, kernel, stride, padding, dilation)
    x = torch.zeros(1, 1, size, size)
    w = torch.zeros(1, 1, kernel, kernel)
    try:
        got = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1]
    except RuntimeError:
        got = 0
    assert got == expected


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 6),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    ceil_mode=st.booleans(),
)
def test_pool_output_size_matches_torch(size, kernel, stride, padding, ceil_mode):
    if padding > kernel // 2:  # torch's own rule for pooling padding
        return
    expected = formulas.conv_output_size(size, kernel, stride, padding, ceil_mode=ceil_mode)
    try:
        got = F.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, padding,
                           ceil_mode=ceil_mode).shape[-1]  # fmt: skip
    except RuntimeError:
        got = 0
    assert got == expected
