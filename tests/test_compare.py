"""`cnnzoo compare`: the files of a real two-model comparison against the trainer's metrics, an
independent evaluation, the analyzer and the benchmark rows; the chart data against hand-made
tables; resuming a killed comparison; the report in a real headless browser; the degradation
experiment; the time budget; and one-line errors for every bad option.

The report's screenshot is saved as tests/artifacts/compare_report.png (gitignored).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnzoo import create_model
from cnnzoo.analysis import count_params, model_macs
from cnnzoo.bench import BenchRow
from cnnzoo.cli import main
from cnnzoo.compare import (
    CompareConfig,
    CompareReporter,
    charts,
    make_plan,
    pareto_front,
    run_compare,
    runs,
)
from cnnzoo.compare.cli import add_parser
from cnnzoo.compare.reference import REFERENCE_FILE, imagenet_rows
from cnnzoo.compare.results import make_row, rows_to_csv
from cnnzoo.compare.runs import RunRecord
from cnnzoo.errors import CheckpointError, CnnzooError, InputSizeError, UnknownModelError
from tests.conftest import load_reference

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
PNGS = ["accuracy_vs_macs.png", "accuracy_vs_throughput.png", "throughput_vs_batch.png",
        "accuracy_density.png", "accuracy_vs_macs_imagenet.png"]  # fmt: skip
FILES = [*PNGS, "accuracy_vs_macs.svg", "accuracy_vs_macs_imagenet.svg", "results.json",
         "results.csv", "bench.json", "report.html"]  # fmt: skip


def _history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnzoo", "compare", *args]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread while these tests train: on a shared machine with more busy threads
    than cores, torch's spinning worker threads made them ten times slower and more; nothing
    checked here depends on the thread count. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a real comparison, run once for the tests that read its files ----------------------------


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """LeNet-5 (32×32) and ResNet-18 (16×16) on digits, one epoch each, timed with the "auto"
    backend, with the ImageNet reference and the memory probe; few timed calls."""
    tmp = tmp_path_factory.mktemp("compare")
    config = CompareConfig(
        models=["lenet5", "resnet18"], quick=True, epochs=1, bench_rounds=3, memory=True,
        reference="imagenet", out=str(tmp / "cmp"), cache_dir=str(tmp / "cache"), threads=1,
        command=["cnnzoo", "compare", "--models", "lenet5,resnet18", "--quick"],
    )  # fmt: skip
    return run_compare(config)


@pytest.mark.slow
def test_comparison_writes_every_file_with_the_trainers_analyzers_and_benchs_values(compared):
    from cnnzoo.data import load_dataset
    from cnnzoo.evaluate import evaluate
    from cnnzoo.weights import load_weights

    out = compared.out
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "accuracy_vs_macs.svg").read_text()

    data = json.loads((out / "results.json").read_text())
    # LeNet-5 has no published ImageNet figures: results.json says so, as the report does.
    assert "no published ImageNet figures for lenet5" in data["notes"]
    assert "no published ImageNet figures for lenet5" in (out / "report.html").read_text()
    bench = {
        (r["model"], r["batch"]): r for r in json.loads((out / "bench.json").read_text())["rows"]
    }
    reference = load_reference()
    sides = {"lenet5": 32, "resnet18": 16}  # --quick: 16 where the model takes it
    assert [r["model"] for r in data["rows"]] == ["lenet5", "resnet18"]
    for row in data["rows"]:
        name, side = row["model"], sides[row["model"]]
        folder = out / "runs" / name
        history = _history(folder)
        assert len(history) == 1 and row["epochs"] == [1] and row["image_size"] == side
        # The trainer's figures, as it wrote them.
        assert row["top1_pct"] == pytest.approx(100 * history[-1]["val_acc"], abs=1e-12)
        assert row["top5_pct"] == pytest.approx(100 * history[-1]["val_top5"], abs=1e-12)
        assert row["train_seconds"] == pytest.approx(sum(h["seconds"] for h in history))
        # An independent evaluation of the weights file gives the same accuracy.
        model, _ = load_weights(None, folder / "model.safetensors")
        val = load_dataset("digits", preprocessing=model.pretrained_cfg).val
        # In the arithmetic the run validated in: bf16 autocast with --amp.
        amp = data["settings"]["train_precision"] != "fp32"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            result = evaluate(model, val, num_classes=10, class_names=[str(i) for i in range(10)])
        assert result.images == 360
        assert row["top1_pct"] == pytest.approx(100 * result.top1, abs=1e-9)
        assert row["top5_pct"] == pytest.approx(100 * result.topk, abs=1e-9)
        # The analyzer on a freshly built network of the same shape.
        fresh = create_model(name, num_classes=10, in_chans=1)
        assert row["params"] == count_params(fresh)
        assert row["macs"] == model_macs(fresh, (1, side, side))
        if name == "lenet5":  # the published LeNet-5 (10 classes, 1×32×32)
            assert row["params"] == reference["lenet5"]["params"]
            assert row["macs"] == reference["lenet5"]["macs"]
        assert row["top1_pct_per_mparams"] == pytest.approx(row["top1_pct"] / (row["params"] / 1e6))
        # The file a deployment ships: its size on disk, about 4 bytes a parameter (fp32).
        size = (folder / "model.safetensors").stat().st_size
        assert row["weights_mb"] == size / 1e6 and 4 * row["params"] < size
        # The benchmark rows of the same weights.
        b1, b32 = bench[(name, 1)], bench[(name, 32)]
        assert (b1["params"], b1["macs"]) == (row["params"], row["macs"])
        assert b1["input_size"] == [1, side, side] and b1["calls"] == 3
        assert row["latency_p50_ms_b1"] == b1["p50_ms"]
        assert row["throughput_img_s_b32"] == pytest.approx(32 / (b32["p50_ms"] / 1000))
        assert row["throughput_img_s_b32"] == b32["throughput"]
        assert row["peak_rss_mb_b32"] == b32["peak_rss_mb"] and b32["peak_rss_mb"] > 50
        assert (row["backend_b1"], row["backend_b32"]) == (b1["picked"], b32["picked"])

    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for row, line in zip(data["rows"], table, strict=True):
        assert line["model"] == row["model"] and int(line["params"]) == row["params"]
        assert float(line["top1_pct"]) == pytest.approx(row["top1_pct"])
        assert float(line["latency_p50_ms_b1"]) == pytest.approx(row["latency_p50_ms_b1"])
        assert line["top1_pct_std"] == ""  # one seed: no spread
    assert data["settings"]["image_sizes"] == sides and data["settings"]["epochs"] == 1
    assert data["machine"]["threads"] == 1 and data["versions"]["torch"] == torch.__version__


@pytest.mark.slow
def test_report_opens_in_a_headless_browser_with_every_row_and_chart(compared, tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install chromium` (Debian; `make "
            "test` installs it) — this test opens report.html in a real browser."
        )
    page = compared.out / "report.html"
    text = page.read_text()
    # Self-contained: nothing is fetched (no src/href to a URL, no scripts, no web fonts).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
    ]  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "compare_report.png"
    shot.unlink(missing_ok=True)
    base = [str(CHROMIUM), *flags, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
        check=True,
    ).stdout  # fmt: skip
    for model in ("lenet5", "resnet18"):
        assert re.search(rf'<tr id="row-{model}" class="model-row">', dom), model
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert sorted(alt for alt, _ in images) == sorted(PNGS)
    for _, data in images:
        assert len(data) > 1000
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        colours = image.convert("L").getextrema()
        assert colours[1] - colours[0] > 100  # something was drawn, not a blank page


# --- chart data --------------------------------------------------------------------------------


def test_pareto_front_by_hand():
    # (MACs, top-1): B beats C (cheaper and more accurate); A is the cheapest; D the most
    # accurate; E ties B's accuracy at a higher cost, so B beats E; F equals A exactly.
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 1.0]
    y = [90.0, 95.0, 93.0, 99.0, 95.0, 90.0]
    assert pareto_front(x, y) == [0, 5, 1, 3]
    # Speed: larger x is better. E is the fastest and D the most accurate, so neither beats the
    # other; D (faster and more accurate than A, B, C, F) beats the rest.
    assert pareto_front(x, y, maximize_x=True) == [3, 4]
    assert pareto_front([3.0, 1.0], [40.0, 50.0], maximize_x=True) == [1, 0]  # a trade-off
    assert pareto_front([3.0, 1.0], [50.0, 40.0], maximize_x=True) == [0]  # faster and better
    assert pareto_front([2.0], [10.0]) == [0]


def test_ball_chart_positions_areas_labels_and_front():
    rows = [
        {"model": "a", "params": 1_000_000, "macs": 5e6, "top1_pct": 97.0, "top1_pct_std": 0.3},
        {"model": "b", "params": 4_000_000, "macs": 2e8, "top1_pct": 99.0, "top1_pct_std": None},
        {"model": "c", "params": 250_000, "macs": 3e8, "top1_pct": 98.0, "top1_pct_std": 0.1},
    ]
    chart = charts.ball_chart_data(rows)
    assert chart.labels == ["a", "b", "c"]
    assert list(zip(chart.x, chart.y, strict=True)) == [(5e6, 97.0), (2e8, 99.0), (3e8, 98.0)]
    assert chart.yerr == [0.3, None, 0.1]
    assert chart.areas[1] == pytest.approx(charts.MAX_AREA)  # the largest model
    assert chart.areas[0] / chart.areas[1] == pytest.approx(1 / 4)  # area ∝ parameters
    assert chart.areas[2] / chart.areas[0] == pytest.approx(1 / 4)
    assert chart.pareto == [0, 1]  # c costs more than b for less accuracy
    assert [label for label, _ in chart.legend] == ["250K", "1M", "4M"]
    for label, area in chart.legend:
        assert area == pytest.approx(charts.MAX_AREA * _parse_human(label) / 4_000_000)
    fixed = charts.ball_chart_data(rows, scale=1e-3)
    assert fixed.areas == pytest.approx([1000.0, 4000.0, 250.0])
    speed = charts.ball_chart_data(
        [dict(r, speed=s) for r, s in zip(rows, (900.0, 100.0, 50.0), strict=True)],
        x_key="speed", maximize_x=True,
    )  # fmt: skip
    assert speed.x == [900.0, 100.0, 50.0] and speed.pareto == [1, 0]


def _parse_human(label: str) -> float:
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    return float(label[:-1]) * scale[label[-1]] if label[-1] in scale else float(label)


def test_axis_labels_name_the_input_sides():
    assert charts.sides_text({"a": 32, "b": 32}) == "32×32"
    assert charts.sides_text({"lenet5": 32, "alexnet": 63, "vgg": 32}) == "32×32 (alexnet 63×63)"
    assert charts.sides_text({"x": 16, "y": 32}) == "16×16 (y 32×32)"  # a tie: the smaller side


def test_size_legend_spans_the_models():
    assert [v for v, _ in charts.size_legend([61_706, 128_000_000], 1.0)] == [
        "100K", "1M", "10M", "100M",
    ]  # fmt: skip
    assert charts.size_legend([61_706, 269_434], 2.0) == [
        ("62K", 124_000.0), ("100K", 200_000.0), ("270K", 540_000.0),
    ]  # fmt: skip


def test_density_throughput_and_degradation_data():
    rows = [{"model": "a", "params": 2_000_000, "top1_pct": 98.0},
            {"model": "b", "params": 500_000, "top1_pct": 96.0}]  # fmt: skip
    assert charts.density_data(rows) == [("b", 192.0), ("a", 49.0)]
    bench = [{"model": "a", "batch": 32, "throughput": 900.0},
             {"model": "a", "batch": 1, "throughput": 100.0},
             {"model": "b", "batch": 1, "throughput": 50.0}]  # fmt: skip
    assert charts.throughput_batch_data(bench) == {"a": [(1, 100.0), (32, 900.0)], "b": [(1, 50.0)]}
    history = [{"epoch": 1, "train_acc": 0.5, "val_acc": 0.75},
               {"epoch": 2, "train_acc": 0.875, "val_acc": 1.0}]  # fmt: skip
    assert charts.degradation_data({"m": history}) == {
        "m": {"epoch": [1, 2], "train_error": [50.0, 12.5], "val_error": [25.0, 0.0]}
    }


def test_rows_average_seeds_and_csv_by_hand(tmp_path):
    def record(seed, acc, top5, seconds):
        history = [{"epoch": 1, "val_acc": acc, "val_top5": top5, "seconds": s} for s in seconds]
        return RunRecord("m", seed, tmp_path, 16, history, 2, "trained")

    records = [record(0, 0.97, 0.99, [1.0, 2.0]), record(1, 0.99, 1.0, [2.0, 3.0])]
    (tmp_path / "model.safetensors").write_bytes(bytes(1_500_000))
    bench = [
        BenchRow("m", "auto", "fused", 1, (1, 16, 16), 2.0, 3.0, 500.0, 2_000_000, 7_000_000,
                 0.0, 0.1, 3),
        BenchRow("m", "auto", "eager", 32, (1, 16, 16), 8.0, 9.0, 4000.0, 2_000_000, 7_000_000,
                 0.0, 0.1, 3, peak_rss_mb=300.0),
    ]  # fmt: skip
    row = make_row(records, bench)
    assert row.top1_pct == pytest.approx(98.0)
    assert row.top1_pct_std == pytest.approx(math.sqrt(2.0))  # sample s.d. of 97 and 99
    assert row.top5_pct == pytest.approx(99.5) and row.top5_pct_std == pytest.approx(math.sqrt(0.5))
    assert row.train_seconds == pytest.approx(4.0)  # mean of 3 and 5
    assert row.top1_pct_per_mparams == pytest.approx(49.0)
    assert (row.latency_p50_ms_b1, row.throughput_img_s_b32, row.peak_rss_mb_b32) == (
        2.0,
        4000.0,
        300.0,
    )
    assert (row.backend_b1, row.backend_b32, row.seeds, row.epochs) == (
        "fused",
        "eager",
        [0, 1],
        [2, 2],
    )
    lines = rows_to_csv([row]).splitlines()
    assert lines[0].split(",")[:3] == ["model", "image_size", "seeds"]
    assert row.weights_mb == 1.5
    assert lines[1].startswith("m,16,0;1,2;2,2000000,7000000,1.5,98.0,")


def test_degradation_verdict_by_hand(tmp_path):
    from cnnzoo.compare.report import degradation_verdict

    def runs(**train_acc):
        return [
            RunRecord(
                m, 0, tmp_path, 16, [{"epoch": 1, "train_acc": a, "val_acc": a}], 1, "trained"
            )
            for m, a in train_acc.items()
        ]

    # Final training errors 3%, 40%, 1%, 1.5%: plain56 is 37 points worse; the residual nets
    # are half a point apart, within the 1-point noise band.
    text = degradation_verdict(runs(plain20=0.97, plain56=0.60, resnet20=0.99, resnet56=0.985))
    assert "plain56 40.00%" in text and "resnet56 1.50%" in text
    assert "the deeper plain net trains worse (+37.00 points)" in text
    assert "the residual nets train alike (within 1 point)" in text
    text = degradation_verdict(runs(plain20=0.90, plain56=0.95, resnet20=0.99, resnet56=0.95))
    assert "the deeper plain net trains better (-5.00 points)" in text
    assert "the deeper residual net trains worse too (+4.00 points)" in text


# --- plan and defaults ----------------------------------------------------------------------


def test_default_plan_sizes_and_budget(tmp_path):
    plan = make_plan(CompareConfig(out=str(tmp_path)))
    # 32 pixels unless the model needs more: AlexNet's minimum is 63 (hand-computed in
    # test_alexnet); LeNet-5 takes 32-35.
    assert plan.sizes == {
        "lenet5": 32, "alexnet": 63, "vgg11_bn": 32, "googlenet": 32, "resnet18": 32,
        "densenet121": 32, "mobilenet_v2": 32, "efficientnet_b0": 32,
    }  # fmt: skip
    assert plan.epochs == 4 and plan.seeds == [0] and plan.budget_seconds is None
    assert plan.lrs == {m: 5e-4 if m in ("alexnet", "vgg11_bn") else 2e-3 for m in plan.sizes}
    quick = make_plan(CompareConfig(out=str(tmp_path), quick=True))
    assert quick.sizes == {"mlp": 32, "lenet5": 32, "resnet20": 16, "resnet18": 16}
    assert quick.epochs == 2 and not quick.memory
    one_lr = make_plan(CompareConfig(out=str(tmp_path), models=["alexnet", "lenet5"], lr=1e-3))
    assert one_lr.lrs == {"alexnet": 1e-3, "lenet5": 1e-3}
    several = make_plan(CompareConfig(out=str(tmp_path), models=["lenet5"], seeds=[0, 1]))
    assert several.run_dir("lenet5", 1) == tmp_path / "runs" / "lenet5" / "seed1"
    budget = make_plan(CompareConfig(out=str(tmp_path), budget_seconds=30))
    assert budget.epochs is None and budget.budget_seconds == 30.0
    # channels_last where it trained faster (the plan's table), never with --amp.
    assert [m for m in plan.models if plan.channels_last(m)] == [
        "googlenet", "densenet121", "mobilenet_v2", "efficientnet_b0",
    ]  # fmt: skip
    assert plan.settings()["train_channels_last"] == [
        "googlenet", "densenet121", "mobilenet_v2", "efficientnet_b0",
    ]  # fmt: skip
    amp = make_plan(CompareConfig(out=str(tmp_path), amp=True))
    assert not any(amp.channels_last(m) for m in amp.models)


def test_the_missing_reference_note_is_made_before_any_file(tmp_path):
    from cnnzoo.compare import core

    plan = make_plan(CompareConfig(models=["lenet5", "resnet18"], reference="imagenet",
                                   out=str(tmp_path)))  # fmt: skip
    assert "no published ImageNet figures for lenet5" in core._notes(plan, [])
    plain = make_plan(CompareConfig(models=["lenet5"], out=str(tmp_path)))
    assert not [n for n in core._notes(plain, []) if "ImageNet" in n]


def test_imagenet_reference_copy_equals_the_project_table():
    table = load_reference()
    copy = json.loads(REFERENCE_FILE.read_text())["models"]
    published = [name for name, entry in table.items() if entry.get("top1") is not None]
    assert [r["name"] for r in copy] == published
    for row in copy:
        entry = table[row["name"]]
        assert row["input"] == entry["input"] and row["params"] == entry["params"]
        assert row["macs"] == entry["macs"] and row["top1"] == entry["top1"]
        assert row["top5"] == entry.get("top5")
        assert row["weights"] == (entry.get("weights") or "paper")
    assert [r["name"] for r in imagenet_rows(["resnet18", "lenet5"])] == ["resnet18"]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"models": ["resnet19"]}, UnknownModelError, "resnet19"),
        ({"models": ["lenet5", "lenet5"]}, CnnzooError, "twice"),
        ({"models": [""]}, CnnzooError, "--models"),
        ({"epochs": 3, "budget_seconds": 60}, CnnzooError, "--budget-seconds"),
        ({"epochs": 0}, CnnzooError, "--epochs"),
        ({"budget_seconds": -1}, CnnzooError, "--budget-seconds"),
        ({"budget_seconds": float("nan")}, CnnzooError, "--budget-seconds"),
        ({"reference": "imagnet"}, CnnzooError, "did you mean imagenet"),
        ({"experiment": "degredation"}, CnnzooError, "did you mean degradation"),
        ({"experiment": "degradation", "models": ["lenet5"]}, CnnzooError, "--models"),
        ({"experiment": "degradation", "reference": "imagenet"}, CnnzooError, "--reference"),
        (
            {"image_size": 16, "models": ["resnet18", "alexnet"]},
            InputSizeError,
            "alexnet takes 63+",
        ),
        ({"image_size": 40, "models": ["lenet5"]}, InputSizeError, "lenet5 takes 32-35"),
        ({"seeds": []}, CnnzooError, "--seeds"),
        ({"seeds": [0, 0]}, CnnzooError, "twice"),
        ({"seeds": [-1]}, CnnzooError, "--seeds"),
        ({"batch_size": 0}, CnnzooError, "--batch-size"),
        ({"bench_rounds": 0}, CnnzooError, "--rounds"),
        ({"lr": 0.0}, CnnzooError, "--lr"),
        ({"backend": "int8"}, CnnzooError, "--backend"),
    ],
)
def test_bad_options_raise_one_line(tmp_path, options, error, words):
    with pytest.raises(error) as info:
        make_plan(CompareConfig(out=str(tmp_path), **options))
    assert isinstance(info.value, CnnzooError)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unwritable_folder_and_unknown_dataset_raise_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CnnzooError, match="cannot be written") as info:
        make_plan(CompareConfig(out=str(blocker / "cmp")))
    assert "\n" not in str(info.value)
    with pytest.raises(CnnzooError) as info:
        run_compare(CompareConfig(models=["lenet5"], dataset="digitz", out=str(tmp_path / "x")))
    assert "digitz" in str(info.value) and "\n" not in str(info.value)


def test_command_line_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["compare", "--models", "lenet5", "--epochs", "2", "--budget-seconds", "9",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("cnnzoo compare: error: ") and err.count("\n") == 1
    assert main(["compare", "--seeds", "0,x", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", "--epochs", "many"])
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_registering_the_command_stays_light():
    # `cnnzoo --help` must not pay for the trainer and matplotlib because compare is registered.
    code = (
        "import sys, cnnzoo.cli; "
        "print(sorted(m for m in ('cnnzoo.training.trainer', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    import cnnzoo.compare as package

    assert sorted(package.__all__) == sorted(package._EXPORTS)
    assert all(getattr(package, name) is not None for name in package.__all__)


def test_add_parser_registers_compare():
    import argparse

    parser = argparse.ArgumentParser(prog="cnnzoo")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["compare", "--models", "a,b", "--seeds", "0,1", "--quick"])
    assert args.func.__name__ == "cmd_compare"
    assert (args.models, args.seeds, args.quick, args.dataset) == ("a,b", "0,1", True, "digits")


@pytest.mark.slow
def test_a_run_of_other_settings_is_refused(compared):
    # The fixture trained 1 epoch; asking for 2 in the same folder must not mix the two.
    config = CompareConfig(models=["lenet5"], quick=True, epochs=2, out=str(compared.out))
    with pytest.raises(CheckpointError, match="--epochs 1, not 2") as info:
        run_compare(config)
    assert "\n" not in str(info.value)


# --- resume, budget, degradation ----------------------------------------------------------


@pytest.mark.slow
def test_a_killed_comparison_continues_where_it_stopped(tmp_path):
    out = tmp_path / "cmp"
    args = [
        "--models", "lenet5,resnet20", "--quick", "--epochs", "2", "--backend", "eager",
        "--rounds", "2", "--no-memory", "--threads", "1", "--quiet", "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, CNNZOO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    # Killed once lenet5 has finished and resnet20 has checkpointed its first epoch.
    process = subprocess.Popen(_cli_command(*args), env=env, start_new_session=True)
    second = out / "runs" / "resnet20" / "last.pt"
    deadline = time.monotonic() + 240
    while not second.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert second.exists(), "the comparison never reached resnet20's first checkpoint"
    assert not (out / "results.json").exists()
    first = out / "runs" / "lenet5"
    kept = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    epoch_one = _history(out / "runs" / "resnet20")
    assert len(epoch_one) == 1

    done = subprocess.run(_cli_command(*args), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == kept  # not retrained
    data = json.loads((out / "results.json").read_text())
    status = {r["model"]: (r["status"], r["epochs"]) for r in data["runs"]}
    assert status == {"lenet5": ("reused", 2), "resnet20": ("resumed", 2)}
    history = _history(out / "runs" / "resnet20")
    assert history[0] == epoch_one[0] and len(history) == 2


@pytest.mark.slow
def test_several_seeds_give_mean_and_spread(tmp_path):
    import statistics

    config = CompareConfig(
        models=["lenet5"], seeds=[0, 1], epochs=1, backend="eager", bench_rounds=1,
        memory=False, out=str(tmp_path),
    )  # fmt: skip
    result = run_compare(config)
    top1 = [
        100 * _history(tmp_path / "runs" / "lenet5" / f"seed{s}")[-1]["val_acc"] for s in (0, 1)
    ]
    (row,) = result.rows
    assert row.seeds == [0, 1] and row.top1_pct == pytest.approx(statistics.fmean(top1))
    assert row.top1_pct_std == pytest.approx(statistics.stdev(top1))
    assert f"{row.top1_pct:.2f} ± {row.top1_pct_std:.2f}" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path, monkeypatch):
    from cnnzoo.data import load_dataset

    # A budget of 1 ms with 3 planned epochs: epoch 1 crosses it, so the run ends there.
    monkeypatch.setattr(runs, "_budget_epochs", lambda config, budget, data: 3)
    calls = []

    def counted_fit(config, **kwargs):
        calls.append(config.epochs)
        return fit(config, **kwargs)

    fit = runs.fit
    monkeypatch.setattr(runs, "fit", counted_fit)
    config = CompareConfig(models=["lenet5"], budget_seconds=0.001, out=str(tmp_path))
    plan = make_plan(config)
    data = load_dataset("digits")
    record = runs.train_run(plan, "lenet5", 0, CompareReporter(), data)
    folder = tmp_path / "runs" / "lenet5"
    assert record.stopped_by_budget and record.epochs == 1 and record.planned_epochs == 3
    assert len(_history(folder)) == 1 and (folder / "model.safetensors").is_file()
    assert json.loads((folder / "compare.json").read_text())["planned_epochs"] == 3
    assert calls == [3]  # one run, one fit: the trainer stopped itself
    assert json.loads((folder / "config.json").read_text())["config"]["epochs"] == 3
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again = runs.train_run(plan, "lenet5", 0, CompareReporter(), data)
    assert again.status == "reused" and again.stopped_by_budget
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_large_models_train_without_epoch_checkpoints(tmp_path, monkeypatch):
    """VGG-11-BN's checkpoint is 1.5 GB: its run writes only the final weights; ResNet-18's
    (140 MB) keeps its epoch checkpoints. The trainer's --amp follows the plan."""
    seen = {}

    class Seen(Exception):
        pass

    def fake_fit(config, **kwargs):
        seen[config.model] = config
        raise Seen

    monkeypatch.setattr(runs, "fit", fake_fit)
    plan = make_plan(CompareConfig(models=["vgg11_bn", "resnet18"], out=str(tmp_path), amp=True))
    for model in plan.models:
        with pytest.raises(Seen):
            runs.train_run(plan, model, 0, CompareReporter(), None)
    assert not seen["vgg11_bn"].epoch_checkpoints and seen["resnet18"].epoch_checkpoints
    assert seen["vgg11_bn"].amp and seen["resnet18"].amp
    assert "--no-epoch-checkpoints" in runs._train_command(seen["vgg11_bn"])
    assert make_plan(CompareConfig(out=str(tmp_path))).amp is False  # fp32 unless asked


def test_the_comparison_has_no_training_step_of_its_own():
    import cnnzoo.compare

    folder = Path(cnnzoo.compare.__file__).parent
    for path in folder.glob("*.py"):
        text = path.read_text()
        for word in (".backward(", "cross_entropy", "optimizer.step", "build_optimizer"):
            assert word not in text, f"{path.name} trains by itself ({word})"


@pytest.mark.slow
def test_budget_plans_epochs_from_timed_steps(tmp_path):
    from cnnzoo.data import load_dataset
    from cnnzoo.training.config import TrainConfig

    config = TrainConfig(model="lenet5", image_size=32, batch_size=32, out=str(tmp_path))
    data = load_dataset("digits")
    assert runs._budget_epochs(config, 1e-6, data) == 1
    assert runs._budget_epochs(config, 1e9, data) == runs.MAX_BUDGET_EPOCHS


@pytest.mark.slow
def test_degradation_experiment_writes_chart_table_and_verdict(tmp_path):
    out = tmp_path / "deg"
    result = run_compare(
        CompareConfig(experiment="degradation", epochs=1, image_size=8, out=str(out))
    )
    for name in ("degradation.png", "degradation.csv", "degradation.json", "report.html"):
        assert (out / name).is_file(), name
    with open(out / "degradation.csv", newline="") as f:
        table = list(csv.DictReader(f))
    errors = {}
    for model in ("plain20", "plain56", "resnet20", "resnet56"):
        history = _history(out / "runs" / model)
        (line,) = [r for r in table if r["model"] == model]
        assert float(line["train_error_pct"]) == pytest.approx(100 * (1 - history[0]["train_acc"]))
        assert float(line["val_error_pct"]) == pytest.approx(100 * (1 - history[0]["val_acc"]))
        errors[model] = 100 * (1 - history[-1]["train_acc"])
    gap = errors["plain56"] - errors["plain20"]  # 1 point or less reads as alike
    plain = (
        "plain net trains worse"
        if gap > 1
        else "plain net trains better"
        if gap < -1
        else "plain nets train alike"
    )
    assert plain in result.notes[0]
    assert f"plain56 {errors['plain56']:.2f}%" in result.notes[0]
    page = (out / "report.html").read_text()
    assert page.count('class="model-row"') == 4 and "data:image/png;base64," in page
    payload = json.loads((out / "degradation.json").read_text())
    assert payload["epochs"]["plain56"]["epoch"] == [1]
