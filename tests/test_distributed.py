"""DDP on CPU: two processes under torchrun (gloo, one thread each) on the built-in digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--epochs", "10", "--batch-size", "32", "--augment", "none", "--quiet"]


def _final(out: Path) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CNNZOO_FAULT", None)
    single = tmp_path_factory.mktemp("single")
    ddp = tmp_path_factory.mktemp("ddp")
    subprocess.run(
        [sys.executable, "-m", "cnnzoo", "train", *ARGS, "--out", str(single)],
        env=env, check=True, timeout=300,
    )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]  # fmt: skip
    proc = subprocess.run(
        [*torchrun, "-m", "cnnzoo", "train", *ARGS, "--out", str(ddp)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return single, ddp


def test_two_processes_write_one_set_of_outputs(runs):
    _, ddp = runs
    config = json.loads((ddp / "config.json").read_text())
    assert config["world_size"] == 2
    assert config["config"]["batch_size"] == 32  # the global batch: 16 per process
    rows = (ddp / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, 11))
    assert sorted(p.name for p in ddp.iterdir() if not p.name.startswith(".")) == [
        "best.pt", "config.json", "confusion.png", "curves.png", "last.pt", "metrics.jsonl",
        "model.safetensors",
    ]  # fmt: skip


def test_every_validation_image_counts_once(runs):
    single, ddp = runs
    assert _final(ddp)["val_images"] == _final(single)["val_images"] == 360


def test_accuracy_within_1_5_points_of_one_process(runs):
    single, ddp = runs
    a, b = _final(single)["val_acc"], _final(ddp)["val_acc"]
    assert a > 0.9 and b > 0.9
    assert abs(a - b) <= 0.015
