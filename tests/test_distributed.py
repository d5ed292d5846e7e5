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


def test_gpu_runs_reduce_cpu_tensors_with_gloo_and_cuda_tensors_with_nccl():
    from torch.distributed.distributed_c10d import Backend, BackendConfig

    from cnnzoo.training.distributed import backend_for

    # The metric sums are CPU tensors, which an nccl-only group rejects: a GPU run must route
    # them to gloo, its gradients (CUDA tensors) to nccl. torch's own parser reads the choice.
    routes = BackendConfig(Backend(backend_for("cuda"))).get_device_backend_map()
    assert routes == {"cpu": "gloo", "cuda": "nccl"}
    assert BackendConfig(Backend(backend_for("cpu"))).get_device_backend_map()["cpu"] == "gloo"


def test_cpu_sums_go_through_the_cpu_backend_of_a_device_specific_group(tmp_path):
    # The same form of backend string as a GPU run's, with the part a CPU machine can make.
    code = (
        "import torch, torch.distributed as dist\n"
        f"dist.init_process_group('cpu:gloo', init_method='file://{tmp_path / 'store'}', "
        "rank=0, world_size=1)\n"
        "from cnnzoo.training.distributed import Dist, all_reduce_sum\n"
        "t = all_reduce_sum(torch.tensor([1.0, 2.0], dtype=torch.float64), Dist(0, 0, 2))\n"
        "print(t.tolist()); dist.destroy_process_group()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[1.0, 2.0]"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_nan_on_one_process_stops_both_with_one_line(tmp_path):
    # torchrun's environment, set by hand so that each process's stderr can be read alone.
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   CNNZOO_FAULT="nan:epoch=2:step=3:rank=1")  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cnnzoo", "train", "--model", "mlp", "--epochs", "3",
             "--batch-size", "64", "--augment", "none", "--quiet", "--out", str(tmp_path)],
            env=env, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    try:
        errors = [p.communicate(timeout=120)[1] for p in procs]  # a hang fails here
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [2, 2], errors
    for err in errors:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "at epoch 2, step 3" in lines[0]
    assert "the loss became nan at epoch 2" in errors[1]
    assert "non-finite on another process" in errors[0]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1


def _agree(rank: int, store: str, results: str) -> None:
    import torch.distributed as dist

    from cnnzoo.training.distributed import Dist, all_finite, any_true

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    info = Dist(rank, rank, 2)
    answers = [
        any_true(rank == 0, info),  # rank 0's reporter says stop: both stop
        any_true(False, info),
        all_finite(float("nan") if rank == 1 else 1.0, info),  # NaN on rank 1 only
        all_finite(2.0, info),
    ]
    Path(f"{results}.{rank}").write_text(json.dumps(answers))
    dist.destroy_process_group()


def test_processes_agree_on_stopping_and_on_a_non_finite_loss(tmp_path):
    import torch.multiprocessing as mp

    results = tmp_path / "answers"
    mp.spawn(_agree, args=(str(tmp_path / "store"), str(results)), nprocs=2, join=True)
    for rank in (0, 1):
        assert json.loads(Path(f"{results}.{rank}").read_text()) == [True, False, False, True]
