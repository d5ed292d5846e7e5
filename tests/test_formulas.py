"""The textbook formulas, by hand and against real torch layers (property-based)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.analysis import formulas
from cnnzoo.analysis.summary import summarize
from cnnzoo.errors import InputSizeError


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
    except RuntimeError as err:
        got = _too_small(err)
    assert got == expected


def _too_small(err: RuntimeError) -> int:
    """Torch refuses a window larger than its (padded) input; any other error is a failure."""
    text = str(err)
    assert "Output size is too small" in text or "Kernel size can't be greater" in text, text
    return 0


@st.composite
def kernel_and_padding(draw, max_kernel: int) -> tuple[int, int]:
    """Only the cases torch's pooling accepts (padding at most half the kernel), so that every
    example is checked: a filter would pass the rejected ones unchecked."""
    kernel = draw(st.integers(1, max_kernel))
    return kernel, draw(st.integers(0, kernel // 2))


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 40),
    window=kernel_and_padding(6),
    stride=st.integers(1, 4),
    ceil_mode=st.booleans(),
)
def test_pool_output_size_matches_torch(size, window, stride, ceil_mode):
    kernel, padding = window
    expected = formulas.conv_output_size(size, kernel, stride, padding, ceil_mode=ceil_mode)
    try:
        got = F.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, padding,
                           ceil_mode=ceil_mode).shape[-1]  # fmt: skip
    except RuntimeError as err:
        got = _too_small(err)
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    groups=st.integers(1, 4),
    in_per_group=st.integers(1, 4),
    out_per_group=st.integers(1, 4),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    bias=st.booleans(),
    size=st.integers(5, 12),
    stride=st.integers(1, 3),
)
def test_conv_params_and_macs_match_torch(
    groups, in_per_group, out_per_group, kernel, bias, size, stride
):
    in_chans, out_chans = groups * in_per_group, groups * out_per_group
    conv = torch.nn.Conv2d(in_chans, out_chans, kernel, stride, groups=groups, bias=bias)
    assert formulas.conv_params(in_chans, out_chans, kernel, groups, bias) == sum(
        p.numel() for p in conv.parameters()
    )
    x = torch.zeros(1, in_chans, size, size)
    with FlopCounterMode(display=False) as counter:
        out = conv(x)
    macs = formulas.conv_macs(in_chans, out_chans, kernel, *out.shape[2:], groups)
    assert 2 * macs == counter.get_total_flops()


@settings(max_examples=200, deadline=None)
@given(in_features=st.integers(1, 64), out_features=st.integers(1, 64), bias=st.booleans())
def test_linear_params_match_torch(in_features, out_features, bias):
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    expected = sum(p.numel() for p in layer.parameters())
    assert formulas.linear_params(in_features, out_features, bias) == expected


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 40),
    window=kernel_and_padding(5),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    ceil_mode=st.booleans(),
)
def test_dilated_pool_output_size_matches_torch(size, window, stride, dilation, ceil_mode):
    kernel, padding = window
    expected = formulas.conv_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    try:
        got = F.max_pool2d(
            torch.zeros(1, 1, size, size), kernel, stride, padding, dilation, ceil_mode
        ).shape[-1]
    except RuntimeError as err:
        got = _too_small(err)
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 30),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_too_small_inputs_raise_before_running(size, kernel, stride, padding, dilation):
    """The shape-only pass raises InputSizeError exactly where the formula gives 0, and its
    message carries the formula with the numbers substituted."""
    conv = torch.nn.Conv2d(1, 1, kernel, stride, padding, dilation, device="meta")
    out = formulas.conv_output_size(size, kernel, stride, padding, dilation)
    if out >= 1:
        assert summarize(conv, (1, size, size)).layers[0].output_shape[-1] == out
        return
    text = formulas.output_size_formula(size, kernel, stride, padding, dilation)
    with pytest.raises(InputSizeError) as error:
        summarize(conv, (1, size, size))
    assert text in str(error.value)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 50), out=st.integers(1, 8))
def test_adaptive_pool_window_covers_every_cell(size, out):
    window, step = formulas.adaptive_pool_window(size, out)
    starts = [i * size // out for i in range(out)]
    ends = [-(-(i + 1) * size // out) for i in range(out)]
    assert window == max(e - s for s, e in zip(starts, ends, strict=True))
    assert step == max(size // out, 1)


def test_output_size_formula_text():
    assert formulas.output_size_formula(224, 11, 4, 2) == "⌊(224 − 11 + 2·2)/4⌋ + 1 = 55"
    assert formulas.output_size_formula(2, 3, 2, ceil_mode=True) == "⌈(2 − 3 + 2·0)/2⌉ + 1 = 1"
    assert (
        formulas.output_size_formula(7, 3, dilation=2) == "⌊(7 − (2·(3 − 1) + 1) + 2·0)/1⌋ + 1 = 3"
    )


def test_separable_macs_by_hand_and_against_torch_layers():
    from torch import nn

    from cnnzoo.analysis import summarize

    # MobileNet's example: 3×3, M = 512 → N = 512 on a 14×14 map.
    assert formulas.separable_macs(512, 512, 3, 14, 14) == 9 * 512 * 196 + 512 * 512 * 196
    block = nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.Conv2d(32, 64, 1, bias=False)
    )
    assert summarize(block, (32, 14, 14)).macs == formulas.separable_macs(32, 64, 3, 14, 14)
