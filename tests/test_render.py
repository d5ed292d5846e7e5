"""Rendering of summaries: golden files for two models, hand-checked explain lines, the JSON
schema, CSV/Markdown shapes, and the `cnnzoo summary` output options.

The golden files in ``tests/golden/`` are compared exactly. After an intended change to the
output, regenerate them and review the diff:

    CNNZOO_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render.py
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from cnnzoo.analysis import render, summarize
from cnnzoo.cli import main

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CNNZOO_UPDATE_GOLDEN") == "1"
RENDERERS = {
    "table.txt": lambda s: render.render_table(s, "adam", width=160),
    "json": lambda s: render.render_json(s, "adam"),
    "explain.txt": lambda s: render.render_explain(s, "adam"),
}


@pytest.fixture(scope="module", params=["lenet5", "resnet20"])
def summary(request):
    return summarize(request.param)


@pytest.mark.parametrize("kind", RENDERERS)
def test_rendering_equals_golden_file(summary, kind: str):
    text = RENDERERS[kind](summary) + "\n"
    path = GOLDEN / f"{summary.model}.{kind}"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"regenerate {path.name} if intended"


def test_lenet5_explain_lines_are_the_textbook_numbers():
    lines = [line.strip() for line in render.render_explain(summarize("lenet5")).splitlines()]
    # 32 → 28 → 14 → 10 → 5, LeCun et al. 1998 Fig. 2.
    c1 = "c1: W' = ⌊(32 − 5 + 2·0)/1⌋ + 1 = 28, params = 6·(5²·1 + 1) = 156, "
    assert c1 + "MACs = 6·28·28·5²·1 = 117,600" in lines
    assert "s2 (AvgPool2d): W' = ⌊(28 − 2 + 2·0)/2⌋ + 1 = 14 → 6×14×14" in lines
    assert any(line.startswith("c3: W' = ⌊(14 − 5 + 2·0)/1⌋ + 1 = 10,") for line in lines)
    assert "s4 (AvgPool2d): W' = ⌊(10 − 2 + 2·0)/2⌋ + 1 = 5 → 16×5×5" in lines
    assert "f6: params = 84·(120 + 1) = 10,164, MACs = 120·84 = 10,080" in lines


def test_alexnet_conv1_line_is_the_issue_example():
    line = render.explain_line(summarize("alexnet").layers[0])
    # torchvision's name for conv1 is features.0 (module names are the checkpoint format).
    assert line.startswith(
        "features.0: W' = ⌊(224 − 11 + 2·2)/4⌋ + 1 = 55, params = 64·(11²·3 + 1) = 23,296, "
    )
    assert line.endswith("MACs = 64·55·55·11²·3 = 70,276,800")


def test_explain_shows_both_axes_grouped_convs_and_ceil_mode():
    lines = render.render_explain(summarize("googlenet", (3, 224, 160))).splitlines()
    both = "conv1.conv: H' = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112, W' = ⌊(160 − 7 + 2·3)/2⌋ + 1 = 80"
    assert lines[3].strip().startswith(both)
    assert any("maxpool1 (MaxPool2d): H' = ⌈(112 − 3 + 2·0)/2⌉ + 1 = 56" in x for x in lines)
    depthwise = render.explain_line(summarize("mobilenet_v2").layers[3])
    assert "params = 32·3²·32/32 = 288" in depthwise


def test_json_schema_top_level_and_layers():
    data = json.loads(render.render_json(summarize("resnet20", batch_size=2), "sgd"))
    assert data["schema_version"] == render.SCHEMA_VERSION
    for key in ("params", "macs", "flops", "activation_bytes", "layers", "model", "input_size",
                "batch_size", "unknown", "training_memory"):  # fmt: skip
        assert key in data
    assert data["flops"] == 2 * data["macs"] and data["batch_size"] == 2
    assert data["training_memory"]["optimizer"] == "sgd"
    assert data["training_memory"]["optimizer_state"] == 0
    assert list(data["layers"][0]) == list(render.LAYER_FIELDS)
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]


def test_csv_and_markdown_have_one_row_per_layer():
    result = summarize("resnet20")
    rows = list(csv.DictReader(io.StringIO(render.render_csv(result))))
    assert len(rows) == len(result.layers)
    assert rows[0]["name"] == "conv1" and rows[0]["output_shape"] == "1x16x32x32"
    assert sum(int(r["macs"]) for r in rows) == result.macs
    table = [x for x in render.render_markdown(result).splitlines() if x.startswith("| ")]
    assert len(table) == 2 + len(result.layers)  # header and alignment rows, then layers


def test_cli_output_options(capsys):
    assert main(["summary", "lenet5", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out == (GOLDEN / "lenet5.explain.txt").read_text(encoding="utf-8")
    assert main(["summary", "lenet5", "--csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + len(summarize("lenet5").layers)
    assert main(["summary", "lenet5", "--markdown", "--batch-size", "4"]) == 0
    assert "batch 4" in capsys.readouterr().out
    assert main(["summary", "lenet5", "--optimizer", "sgd"]) == 0
    assert "sgd at batch 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (["--batch-size", "0"], "--batch-size must be 1 or more"),
    ],
)
def test_cli_bad_options_exit_2(capsys, argv, message):
    assert main(["summary", "lenet5", *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.count("\n") == 1 and out == ""


def test_one_human_count_for_tables_and_charts():
    # Two decimals in the analyzer's and the CLI's tables, three significant digits on charts.
    assert render.human(1_234_567) == "1.23M" and render.human(61_706) == "61.71K"
    assert render.human(999) == "999" and render.human(1_800_000_000) == "1.80G"
    assert render.human(11_689_512, significant=3) == "11.7M"
    assert render.human(61_706, significant=3) == "61.7K"
    assert render.human(7.5, significant=3) == "7.5"
