"""`cnnzoo bench`: the rows' arithmetic against the reference counts, the interleaved timing,
the memory probe, and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnzoo import bench
from cnnzoo.cli import main

MODELS = json.loads((Path(__file__).parent / "data" / "reference_models.json").read_text())[
    "models"
]


def _reference(name: str) -> dict:
    return MODELS[name]


def test_rows_follow_from_the_timings_and_the_published_counts():
    result = bench.run_bench(["lenet5"], ["eager", "fused"], [1, 4], rounds=3, memory=False)
    assert [(r.backend, r.batch) for r in result.rows] == [
        ("eager", 1), ("fused", 1), ("eager", 4), ("fused", 4),
    ]  # fmt: skip
    ref = _reference("lenet5")
    for row in result.rows:
        assert row.params == ref["params"] and row.macs == ref["macs"]
        assert row.input_size == (1, 32, 32) and row.calls == 3
        assert row.p90_ms >= row.p50_ms > 0
        assert row.throughput == pytest.approx(row.batch / (row.p50_ms / 1000))
        assert row.gflops == pytest.approx(2 * ref["macs"] * row.batch / (row.p50_ms / 1000) / 1e9)
        assert row.picked == row.backend and row.peak_rss_mb is None
    assert result.machine["threads"] >= 1 and result.machine["torch"]
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["model"] == "lenet5"


def test_timing_interleaves_backends_in_rotating_order():
    calls: list[str] = []
    runners = {name: (lambda x, name=name: calls.append(name)) for name in "abc"}
    times = bench.time_runners(runners, None, rounds=3)
    timed = calls[3 * bench.WARMUP :]  # after the warm-up calls
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t) == 3 for t in times.values())


def test_percentile_is_numpys():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    for q in (0.5, 0.9, 0.0, 1.0):
        assert bench.percentile(values, q) == pytest.approx(np.percentile(values, 100 * q))


@pytest.mark.slow
def test_memory_probe_sees_the_calls_grow_with_the_batch():
    small_peak, small_calls = bench.memory_probe(
        {"model": "resnet20", "size": [3, 32, 32]}, "eager", 1, 1
    )
    big_peak, big_calls = bench.memory_probe(
        {"model": "resnet20", "size": [3, 32, 32]}, "eager", 256, 1
    )
    assert small_peak > 100  # Python and torch alone are resident
    # 256 images: the first layer's output alone is 256·16·32·32·4 B = 16.8 MB
    assert big_calls > small_calls + 16 and big_peak > small_peak


def test_the_memory_probe_loads_the_onnx_file_it_is_given_and_fails_in_one_line(tmp_path):
    import torch

    from cnnzoo.export import export_model
    from cnnzoo.models import build_model

    torch.manual_seed(0)  # the probe's random weights, as run_bench makes them
    export_model(build_model("lenet5").eval(), tmp_path / "same.onnx", "onnx", model_name="lenet5")
    torch.manual_seed(1)
    export_model(build_model("lenet5").eval(), tmp_path / "other.onnx", "onnx", model_name="lenet5")
    source = {"model": "lenet5", "size": [1, 32, 32]}

    peak, calls = bench.memory_probe(
        source | {"onnx": str(tmp_path / "same.onnx")}, "onnxruntime", 2, 1
    )
    assert peak > 100 and calls >= 0  # Python and torch are resident

    # Another model's file fails the backend's check: the probe used the file, not an export.
    with pytest.raises(RuntimeError) as err:
        bench.memory_probe(source | {"onnx": str(tmp_path / "other.onnx")}, "onnxruntime", 2, 1)
    text = str(err.value)
    assert "\n" not in text and text.startswith("memory probe of lenet5/onnxruntime failed: ")
    assert "does not compute what" in text
    with pytest.raises(RuntimeError, match=r"memory probe of .*none\.safetensors/eager failed"):
        bench.memory_probe({"weights": str(tmp_path / "none.safetensors")}, "eager", 1, 1)


def test_bench_command_writes_json(capsys, tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench", "--models", "lenet5", "--backends", "eager", "--batch-sizes", "2",
                 "--rounds", "2", "--no-memory", "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "lenet5" in text and "threads" in text
    data = json.loads(out.read_text())
    assert data["rows"][0]["batch"] == 2 and data["machine"]["cpu"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "lenet5", "--all"], "one of them"),
        ([], "one of them"),
        (["--models", "lenet5", "--backends", "turbo"], "unknown backend 'turbo'"),
        (["--models", "lenet5", "--batch-sizes", "0,8"], "--batch-sizes '0,8'"),
        (["--models", "alexnet", "--image-size", "32"], "alexnet takes 63+"),
        (["--models", "lenet6"], "lenet6"),
        (["--models", "lenet5", "--json", "/nonexistent/x.json"], "does not exist"),
    ],
)
def test_bad_bench_arguments_give_one_line(capsys, argv, message):
    code = main(["bench", "--no-memory", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
