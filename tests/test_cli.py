"""The command line, run in-process; one subprocess run proves `python -m cnnzoo` works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnnzoo
from cnnzoo.cli import main
from tests.conftest import load_reference

REFERENCE = load_reference()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_has_every_model_with_counts(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == cnnzoo.list_models()
    for name in ("lenet5", "resnet50", "alexnet", "vgg16"):
        ref = REFERENCE[name]
        assert rows[name]["params"] == ref["params"]
        assert rows[name]["macs"] == ref["macs"]
        assert rows[name]["input_size"] == ref["input"]
    assert rows["alexnet"]["valid_sizes"] == "63+"
    assert rows["lenet5"]["valid_sizes"] == "32-35"
    assert {"family", "year", "min_size", "max_size"} <= set(rows["lenet5"])


def test_list_table_shows_names_and_sizes(capsys):
    code, out, _ = run(capsys, "list", "--family", "resnet")
    assert code == 0
    assert "resnet18_cifar" in out and "25,557,032" in out and "4.09G" in out


def test_summary_json_totals_match_reference(capsys):
    code, out, _ = run(capsys, "summary", "resnet20", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == REFERENCE["resnet20"]["params"]
    assert data["macs"] == REFERENCE["resnet20"]["macs"]
    assert data["flops"] == 2 * data["macs"]
    assert data["layers"][0]["name"] == "conv1"
    assert data["layers"][0]["output_shape"] == [1, 16, 32, 32]


def test_summary_with_other_input_and_classes(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--input", "1x64x64", "--num-classes", "5")
    assert code == 0
    # conv1 of 1 channel: 64·(7²·1) = 3,136 weights; fc: 5·(512 + 1) = 2,565.
    assert "3,136" in out and "2,565" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "resnet05"], "unknown model 'resnet05' (did you mean"),
        (["summary", "resnet18", "--input", "3x224"], "--input '3x224' is not an input size"),
        (["summary", "resnet18", "--input", "axbxc"], "write CxHxW"),
        (["summary", "resnet18", "--num-classes", "0"], "num_classes must be a positive"),
        (["summary", "lenet5", "--input", "1x28x28"], "c5 (Conv2d) gets a 4×4 input"),
        (["summary", "lenet5", "--input", "1x28x28"], "32-35 pixels a side"),
        (["summary", "lenet5", "--input", "1x64x64"], "32-35 pixels a side"),
        (["summary", "alexnet", "--input", "3x32x32"], "at least 63×63"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out == ""


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "cnnzoo", "summary", "lenet5", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["params"] == REFERENCE["lenet5"]["params"]


def test_a_size_mistake_reads_the_same_in_train_summary_and_python(capsys):
    from cnnzoo.analysis import check_input
    from cnnzoo.errors import InputSizeError

    code, _, train_err = run(capsys, "train", "--model", "alexnet", "--image-size", "32",
                             "--epochs", "1")  # fmt: skip
    assert code == 2
    code, _, summary_err = run(capsys, "summary", "alexnet", "--input", "3x32x32")
    assert code == 2
    with pytest.raises(InputSizeError) as info:
        cnnzoo.summarize("alexnet", (3, 32, 32))
    with pytest.raises(InputSizeError) as checked:
        check_input("alexnet", (3, 32, 32))
    line = str(info.value)
    assert line.startswith("alexnet at input 3×32×32: features.12 (MaxPool2d)")
    assert str(checked.value) == line
    assert train_err.strip() == f"cnnzoo train: error: {line}"
    assert summary_err.strip() == f"cnnzoo summary: error: {line}"
