"""`cnnzoo explain conv|pool|relu|softmax|flatten|forward`: the worked mechanism against hand
calculations, torch's functions and cnnzoo's own pooling layers."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.analysis import mechanism as m
from cnnzoo.analysis import sliding
from cnnzoo.cli import main
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import StochasticPool2d, make_pool

# --- convolution ------------------------------------------------------------------------------


def test_the_textbook_example_by_hand():
    # Input 0..24 row by row, kernel 1..9: out[0, 0] = Σ x·k over the top-left 3×3 window.
    x, k, bias = m.make_values("ramp", (1, 5, 5), (1, 3, 3))
    walk = m.conv_walkthrough(x, k, bias)
    by_hand = 0 * 1 + 1 * 2 + 2 * 3 + 5 * 4 + 6 * 5 + 7 * 6 + 10 * 7 + 11 * 8 + 12 * 9
    assert by_hand == 366 and walk.output[0][0] == 366
    assert walk.output_shape == (3, 3)  # 5×5, 3×3, stride 1 → 3×3
    assert m.conv_walkthrough(x, k, padding=1).output_shape == (5, 5)  # zero padding 1 → 5×5
    cell = walk.cells[0]
    assert (cell.rows, cell.cols) == ([0, 1, 2], [0, 1, 2])
    assert cell.products[0] == [[0, 2, 6], [20, 30, 42], [70, 88, 108]]
    text = m.render_conv(walk, cells=1)
    assert "0·1 + 1·2 + 2·3 + 5·4 + 6·5 + 7·6 + 10·7 + 11·8 + 12·9 = 366" in text
    assert "+ bias 0 → out[0, 0] = 366" in text
    assert "H' = ⌊(W − F + 2P)/S⌋ + 1 = ⌊(5 − 3 + 2·0)/1⌋ + 1 = 3" in text
    assert "… 8 more cell(s) not written out (--cells all" in text


def test_padding_and_dilation_positions_are_named():
    x, k, _ = m.make_values("ramp", (1, 5, 5), (1, 3, 3))
    walk = m.conv_walkthrough(x, k, bias=2, stride=2, padding=1, dilation=2)
    first = walk.cells[0]
    assert first.rows == [-1, 1, 3] and first.cols == [-1, 1, 3]
    assert first.windows[0][0] == [0, 0, 0] and first.windows[0][1] == [0, 6, 8]
    assert first.result == first.total + 2
    assert "rows −1, 1, 3 (−1 in the padding)" in m.render_conv(walk, cells=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chans=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 4),
    kw=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
    dilation=st.integers(1, 2), seed=st.integers(0, 10_000),
)  # fmt: skip
def test_the_map_equals_torch_conv2d_exactly(chans, h, w, kh, kw, stride, padding, dilation, seed):
    rng = random.Random(seed)
    x = [[[rng.randint(-9, 9) for _ in range(w)] for _ in range(h)] for _ in range(chans)]
    k = [[[rng.randint(-3, 3) for _ in range(kw)] for _ in range(kh)] for _ in range(chans)]
    bias = rng.randint(-5, 5)
    tx, tk = torch.tensor([x], dtype=torch.float32), torch.tensor([k], dtype=torch.float32)
    try:
        expected = F.conv2d(tx, tk, torch.tensor([float(bias)]), stride, padding, dilation)
    except RuntimeError:  # torch refuses a kernel larger than the padded input; so must we
        with pytest.raises(InvalidArgumentError, match="larger than the padded input"):
            m.conv_walkthrough(x, k, bias, stride, padding, dilation)
        return
    walk = m.conv_walkthrough(x, k, bias, stride, padding, dilation)
    assert torch.equal(torch.tensor(walk.output, dtype=torch.float32), expected[0, 0])
    assert all(c.result == walk.output[c.row][c.col] for c in walk.cells)


def test_records_are_plain_data(capsys):
    # The records a web page reads: JSON, with every cell's window, products and result.
    assert main(["explain", "conv", "--channels", "2", "--stride", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [2, 5, 5] and data["output_shape"] == [2, 2]
    cell = data["cells"][3]
    assert sum(cell["channel_sums"]) + data["bias"] == cell["result"] == data["output"][1][1]


def test_values_file_and_its_wrong_shape(tmp_path, capsys):
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"input": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "kernel": [[1, -1]],
                                "bias": 0.5}))  # fmt: skip
    assert main(["explain", "conv", "--values", str(path)]) == 0
    out = capsys.readouterr().out
    assert "one 1×1×2 filter" in out and "1·1 + 2·(−1) = −1" in out and "= −0.5" in out
    assert main(["explain", "conv", "--values", str(path), "--input", "4x4"]) == 2
    err = capsys.readouterr().err
    assert "'input' is 1×3×3 (C×H×W), expected 1×4×4 (--input 4x4, --channels 1)" in err
    assert err.count("\n") == 1


def test_large_inputs_are_bounded(capsys):
    assert main(["explain", "conv", "--input", "40x40", "--kernel", "3x3", "--cells", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("the kernel over input") == 2 and "… 1442 more cell(s)" in out
    assert "input (1×40×40): not printed" not in out and "not printed (over 32 a side" in out


def test_gif_and_frames_open_with_one_frame_per_cell(tmp_path, capsys):
    gif, png = tmp_path / "slide.gif", tmp_path / "frames.png"
    argv = ["explain", "conv", "--input", "4x4", "--kernel", "3x3", "--padding", "1"]
    assert main([*argv, "--stride", "2", "--gif", str(gif)]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == 4  # a 2×2 map
    assert main([*argv, "--frames", str(png), "--channels", "2"]) == 0
    walk = m.conv_walkthrough(*m.make_values("random", (2, 4, 4), (2, 3, 3)), padding=1)
    frame = sliding.conv_frames(walk)[0]
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == (4 * frame.width, 4 * frame.height)  # 16 cells
    big = m.conv_walkthrough([[0] * 10] * 10, [[1]])
    assert sliding.frame_count(big) == sliding.MAX_FRAMES < len(big.cells)


# --- pooling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["max", "avg", "min", "stochastic"])
@pytest.mark.parametrize(("side", "size", "stride"), [(4, 2, None), (5, 3, 1), (6, 2, 3)])
def test_pooling_equals_cnnzoos_layers(kind, side, size, stride):
    grid = m.make_values("random", (1, side, side), seed=side)[0][0]
    walk = m.pool_walkthrough(grid, kind, size, stride, seed=3)
    layer = make_pool(kind, size, stride).eval()  # stochastic: the test-time expectation
    x = torch.tensor([[grid]], dtype=torch.float32)
    expected = layer(x)[0, 0]
    assert torch.allclose(torch.tensor(walk.output, dtype=torch.float32), expected, rtol=1e-6)
    if kind == "stochastic":
        # Training mode: the same draw as the layer's own under the same seed.
        torch.manual_seed(3)
        sampled = layer.train()(x)[0, 0]
        assert torch.equal(torch.tensor(walk.samples, dtype=torch.float32), sampled)
        for cell in walk.cells:
            assert sum(sum(r) for r in cell.probabilities) == pytest.approx(1)


def test_stochastic_pooling_by_hand(capsys):
    assert isinstance(make_pool("stochastic", 2), StochasticPool2d)
    walk = m.pool_walkthrough([[1, 3], [0, 4]], "stochastic", 2)
    cell = walk.cells[0]
    assert cell.probabilities == [[1 / 8, 3 / 8], [0, 4 / 8]]
    assert cell.result == (1 + 9 + 16) / 8
    text = m.render_pool(walk)
    assert "(1² + 3² + 0² + 4²) / 8 = 26/8 = 3.25" in text and "cumulative sums 1, 4, 4, 8" in text
    assert main(["explain", "pool", "--kind", "max", "--values", "ramp"]) == 0
    out = capsys.readouterr().out
    assert "max(0, 1, 4, 5) = 5, from input (1, 1)" in out


# --- ReLU, softmax, flatten -------------------------------------------------------------------


def test_relu_softmax_flatten_against_torch():
    values = [-2.0, -0.5, 0.0, 1.5, 3.0]
    out = m.relu(values).values
    assert [out[f"out{i}"] for i in range(5)] == torch.relu(torch.tensor(values)).tolist()
    logits = [1000.0, 999.0, 990.0]  # e^1000 overflows; the shifted form does not
    probs = m.softmax(logits).values
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0).tolist()
    assert [probs[f"p{i}"] for i in range(3)] == pytest.approx(expected, rel=1e-12)
    assert "p_0 = 1.0000 / 1.3679 = 0.7310" in m.softmax(logits).text()
    text = m.flatten((2, 3, 4)).text()
    grids = m.make_values("ramp", (2, 3, 4))[0]
    assert torch.flatten(torch.tensor([grids]), 1)[0].tolist() == list(range(24))
    assert "flattened: [0, 1, 2, 3, 4, 5, 6" in text and "1·12 + 2·4 + 3 = 23" in text


# --- one image through LeNet-5 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    import cnnzoo
    from cnnzoo.training.trainer import _save_weights

    torch.manual_seed(1)
    model = cnnzoo.create_model("lenet5")
    metadata = {"model": "lenet5", "num_classes": "10", "in_chans": "1", "image_size": "32",
                "mean": "[0.25]", "std": "[0.5]", "dataset": "digits",
                "class_names": json.dumps([str(i) for i in range(10)])}  # fmt: skip
    path = tmp_path_factory.mktemp("forward") / "lenet5.safetensors"
    _save_weights(model, path, metadata)
    return path, model


def test_forward_walk_steps_are_the_analyzers_rows(lenet_file, capsys):
    from cnnzoo.analysis import summarize
    from cnnzoo.data.datasets import load_dataset
    from cnnzoo.forward_walk import forward_walk

    path, model = lenet_file
    walk = forward_walk("lenet5", path, index=5)
    rows = summarize(model, (1, 32, 32)).layers
    steps = [s for s in walk.steps if s.name not in ("input", "(flatten)")]
    assert [(s.name, s.shape) for s in steps] == [(r.name, r.output_shape) for r in rows]
    flat = [s for s in walk.steps if s.type == "flatten"]
    assert len(flat) == 1 and flat[0].shape == (1, 120)  # between C5 and F6
    # The weights' own preprocessing (mean 0.25, std 0.5), and the model's own answer.
    image = load_dataset("digits", preprocessing=model_pre(path)).val[5][0]
    first = walk.steps[0]
    assert first.first == pytest.approx(image.flatten()[:5].tolist(), abs=1e-6)
    assert (first.minimum, first.maximum) == pytest.approx(
        (float(image.min()), float(image.max())), abs=1e-6
    )
    # Without weights: random ones, and the image as `train --model lenet5` prepares it.
    own = forward_walk("lenet5", index=7).steps[0]
    trained_as = load_dataset("digits", image_size=32).val[7][0]
    assert own.first == pytest.approx(trained_as.flatten()[:5].tolist(), abs=1e-6)
    assert (own.minimum, own.maximum) == pytest.approx(
        (float(trained_as.min()), float(trained_as.max())), abs=1e-6
    )
    expected = torch.softmax(model.eval()(image[None]).double(), 1)[0]
    assert walk.probabilities == pytest.approx(expected.tolist(), rel=1e-6)
    assert main(["explain", "forward", "--weights", str(path), "--index", "5"]) == 0
    out = capsys.readouterr().out
    assert "c1         Conv2d     1×6×28×28" in out and "(flatten)" in out and "softmax" in out


def model_pre(path):
    from cnnzoo.weights import load_weights

    return load_weights("lenet5", path)[0].pretrained_cfg


# --- bad input: one line, exit code 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["conv", "--input", "5by5"], "--input '5by5' is not a size: write HxW"),
        (["conv", "--stride", "0"], "--stride must be a positive integer, got 0"),
        (["conv", "--kernel", "7x7"], "the kernel 7×7 is larger than the padded input 5×5"),
        (["conv", "--kernel", "3x3", "--dilation", "3"], "(extent 7×7 with dilation 3)"),
        (["conv", "--values", "missing.json"], "is neither random, ramp nor a file"),
        (["conv", "--cells", "-1"], "--cells '-1' must be a whole number ≥ 0 or 'all'"),
        (["pool", "--kind", "median"], "--kind 'median' is not one of max, avg, min, stochastic"),
        (["pool", "--size", "5"], "the 5×5 window is larger than the 4×4 input"),
        (["pool", "--stride", "0"], "--stride must be a positive integer, got 0"),
        (["flatten", "--input", "3x3"], "is not a map size: write CxHxW"),
        (["softmax", "--values", "1,x"], "is not a list of numbers"),
        (["forward", "--index", "360"], "--index 360 is past the 360 validation digits"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["explain", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a JSON file"),
        ('{"input": [[1, 2], [3]], "kernel": [[1]]}', "'input' must be a rectangular list"),
        ('{"input": [[1, 2], [3, 4]], "kernel": [[true]]}', "'kernel' must be a rectangular"),
        ('{"input": [[1, 2], [3, 4]], "kernel": [[1]], "bias": "a"}', "'bias' must be a number"),
        ('{"input": [[-1, 2], [3, 4]]}', "stochastic pooling needs non-negative values"),
        ('{"input": [[1, 2], [3, 4]], "kernel": [[[1]], [[1]]]}', "'kernel' is 2×1×1 (C×H×W), "
         "expected 1×1×1"),
    ],
)  # fmt: skip
def test_bad_values_files(content, message, tmp_path, capsys):
    path = tmp_path / "v.json"
    path.write_text(content)
    topic = ["pool", "--kind", "stochastic"] if "stochastic" in message else ["conv"]
    assert main(["explain", *topic, "--values", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
