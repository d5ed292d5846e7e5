"""`cnnzoo explain`: the textbook examples against hand calculations."""

from __future__ import annotations

import pytest

from cnnzoo.analysis import explain
from cnnzoo.cli import main


def test_bottleneck_textbook_numbers():
    result = explain.bottleneck(32, 16, 64, 3)
    assert result.values["direct"] == 3 * 3 * 32 * 64 == 18_432
    assert result.values["bottleneck"] == 1 * 1 * 32 * 16 + 3 * 3 * 16 * 64 == 9_728
    assert "3·3·32·64 = 18,432" in result.text()
    assert "1·1·32·16 + 3·3·16·64 = 512 + 9,216 = 9,728" in result.text()


def test_separable_ratio_is_one_over_n_plus_one_over_k_squared():
    result = explain.separable(32, 64, 3, 112)
    assert result.values["standard"] == 9 * 32 * 64 * 112 * 112
    assert result.values["separable"] == 9 * 32 * 112 * 112 + 32 * 64 * 112 * 112
    assert result.values["ratio"] == pytest.approx(1 / 64 + 1 / 9)
    assert result.values["separable"] / result.values["standard"] == pytest.approx(1 / 64 + 1 / 9)


def test_fc_vs_conv_by_hand():
    result = explain.fc_vs_conv(32, 32, 3, 10, 5)
    assert result.values["fc"] == (32 * 32 * 3 + 1) * 10 == 30_730
    assert result.values["conv"] == 10 * (25 * 3 + 1) == 760


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((224, 11, 4, 2), 55),  # AlexNet (torchvision) conv1
        ((227, 11, 4, 0), 55),  # AlexNet (paper) conv1
        ((32, 5, 1, 0), 28),  # LeNet-5 C1
        ((28, 2, 2, 0), 14),  # LeNet-5 S2
        ((14, 5, 1, 0), 10),  # LeNet-5 C3
        ((10, 2, 2, 0), 5),  # LeNet-5 S4
    ],
)
def test_output_size_textbook_numbers(args, expected):
    result = explain.output_size(*args)
    assert result.values["output"] == expected
    size, kernel, stride, padding = args
    assert f"({size} − {kernel} + 2·{padding})/{stride}⌋ + 1 = {expected}" in result.text()


def test_output_size_says_when_the_window_does_not_fit():
    result = explain.output_size(4, 5)
    assert result.values["output"] == 0
    assert "at least 5 pixels" in result.text()


def test_cli_explain_prints_the_worked_example(capsys):
    assert main(["explain", "bottleneck", "--in", "32", "--mid", "16", "--out", "64"]) == 0
    assert "= 9,728 weights" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "bottleneck", "--mid", "0"], "--mid must be a positive integer"),
        (["explain", "output-size", "--padding", "-1"], "--padding must be a whole number ≥ 0"),
        (["explain", "separable", "--size", "-4"], "--size must be a positive integer"),
    ],
)
def test_cli_explain_bad_numbers_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # 1/1 + 1/9 = 10/9: the separable form costs more with one output channel.
        ((1, 1, 3, 14), "= 1/1 + 1/9 = 1.1111 (1.1× more multiply-adds)"),
        ((512, 512, 3, 14), "= 1/512 + 1/9 = 0.1131 (8.8× fewer multiply-adds)"),
        ((16, 1, 1, 4), "= 1/1 + 1/1 = 2.0000 (2.0× more multiply-adds)"),
    ],
)
def test_separable_says_more_when_it_costs_more(args, words):
    assert words in explain.separable(*args).text()


def test_fc_vs_conv_says_more_when_the_kernel_outgrows_the_image():
    # (2·2·1 + 1)·4 = 20 for the dense layer, 4·(11²·1 + 1) = 488 for the convolution.
    text = explain.fc_vs_conv(2, 2, 1, 4, 11).text()
    assert "the convolution needs 24.4× more parameters" in text
    assert "5,376.0× fewer" in explain.fc_vs_conv(224, 224, 3, 96, 3).text()  # 14,450,784 / 2,688


def test_ceil_mode_states_the_last_window_rule():
    # ⌈(5 − 2 + 2·1)/2⌉ + 1 = 4, but the 4th window would start at 6 = W + P: torch drops it.
    result = explain.output_size(5, 2, 2, 1, ceil_mode=True)
    assert result.values["output"] == 3
    text = result.text()
    assert "⌈(5 − 2 + 2·1)/2⌉ + 1 = 4 − 1 = 3" in text
    assert "(4 − 1)·2 = 6 of the padded input, at or past W + P = 5 + 1 = 6" in text
    assert "the last window must start inside the left padding or the input" in text
    # Where rounding up keeps every window, nothing is said about it.
    assert "drops" not in explain.output_size(6, 3, 2, 1, ceil_mode=True).text()


def test_output_size_against_torchs_pooling_layers():
    import torch
    from torch import nn

    from cnnzoo.errors import InvalidArgumentError

    checked = refused = 0
    for size in range(1, 8):
        x = torch.zeros(1, 1, size, size)
        for kernel in range(1, 5):
            for stride in range(1, 4):
                for padding in range(3):
                    for ceil_mode in (False, True):
                        for layer in (nn.MaxPool2d, nn.AvgPool2d):
                            pool = layer(kernel, stride, padding, ceil_mode=ceil_mode)
                            try:
                                expected = pool(x).shape[-1]
                            except RuntimeError as err:
                                expected = str(err)
                            try:
                                out = explain.output_size(
                                    size, kernel, stride, padding, ceil_mode=ceil_mode, pool=True
                                ).values["output"]
                            except InvalidArgumentError as err:
                                # Refused by both, for the same reason.
                                assert "half" in expected and "half the" in str(err), expected
                                refused += 1
                                continue
                            if isinstance(expected, str):  # torch: output too small
                                assert out < 1, (size, kernel, stride, padding, ceil_mode)
                            else:
                                assert out == expected, (size, kernel, stride, padding, ceil_mode)
                            checked += 1
    assert checked > 600 and refused > 100


def test_cli_output_size_refuses_pooling_padding_over_half_the_kernel(capsys):
    argv = ["explain", "output-size", "--size", "5", "--kernel", "3", "--padding", "2"]
    assert main([*argv, "--pool"]) == 2
    err = capsys.readouterr().err
    assert "--padding 2 is more than half the 3-wide pooling window" in err
    assert err.count("\n") == 1
    assert main(argv) == 0  # a convolution takes any padding
