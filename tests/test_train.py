"""The trainer end to end on the built-in digits: what a run leaves, exact resume after a kill,
fail-fast numerics, and one-line errors. Runs that must be killed are separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open

from cnnzoo.cli import main
from cnnzoo.training.loop import _loss

# Small and fast, deterministic: 4 epochs of LeNet-5 on digits.
BASE = ["--model", "lenet5", "--dataset", "digits", "--epochs", "4", "--batch-size", "64",
        "--deterministic", "--quiet"]  # fmt: skip
TIMING = {"seconds", "images_per_s"}


def run_cli(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CNNZOO_FAULT", None)
    if fault:
        env["CNNZOO_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "cnnzoo", "train", *BASE, "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bitwise
    assert metrics(a) == metrics(b)


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> dict[int, Path]:
    """The uninterrupted 4-epoch runs, with 0 and 2 data-loading workers."""
    runs = {}
    for workers in (0, 2):
        out = tmp_path_factory.mktemp(f"full{workers}")
        proc = run_cli(out, "--num-workers", str(workers))
        assert proc.returncode == 0, proc.stderr
        runs[workers] = out
    return runs


def test_a_run_leaves_everything_in_out(reference_runs):
    out = reference_runs[0]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["model"] == "lenet5" and config["config"]["image_size"] == 32
    assert {"torch", "torchvision", "cnnzoo"} <= set(config["versions"])
    assert "train" in config["command"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    required = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr",
                "seconds", "images_per_s"}  # fmt: skip
    assert required <= set(rows[0])
    assert rows[-1]["val_acc"] > 0.8  # four epochs already learn most digits
    for name in ("last.pt", "best.pt", "curves.png", "confusion.png"):
        assert (out / name).stat().st_size > 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and len(state["history"]) == 4
    assert {"model", "optimizer", "scheduler", "rng", "config", "history"} <= set(state)
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["best_acc"] == max(r["val_acc"] for r in rows)
    # best.pt is the checkpoint of the first epoch with that accuracy, whatever came after it.
    best_epoch = next(r["epoch"] for r in rows if r["val_acc"] == best["best_acc"])
    assert best["epoch"] == best_epoch and best["history"] == rows[:best_epoch]
    with safe_open(out / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["model"] == "lenet5" and meta["num_classes"] == "10"
    assert meta["in_chans"] == "1" and meta["image_size"] == "32"
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert len(json.loads(meta["mean"])) == 1
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_in_epoch_3_then_resume_is_the_same_run(reference_runs, tmp_path, workers):
    proc = run_cli(tmp_path, "--num-workers", str(workers), fault="kill:epoch=3:step=5")
    assert proc.returncode == -9  # SIGKILL
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    proc = run_cli(tmp_path, "--num-workers", str(workers), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference_runs[workers], tmp_path)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(reference_runs, tmp_path):
    proc = run_cli(tmp_path, fault="kill:checkpoint:epoch=2")
    assert proc.returncode == -9
    assert list(tmp_path.glob(".last.pt.*.tmp")), "the half-written file is a temporary"
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # still loadable
    assert state["epoch"] == 1
    proc = run_cli(tmp_path, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob(".*.tmp")), "stale temporaries are cleaned up"
    assert_same_run(reference_runs[0], tmp_path)


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    # An absurd learning rate, reached by warming up over 3 epochs: the MLP survives epoch 1
    # (so there is a good checkpoint to keep) and its loss overflows early in epoch 2.
    proc = run_cli(tmp_path, "--model", "mlp", "--optimizer", "sgd", "--lr", "8",
                   "--warmup", "3", "--schedule", "constant", "--augment", "none")  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "the loss became nan at epoch 2, step" in lines[0] and "(lr " in lines[0]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_googlenet_aux_losses_are_weighted_0_3():
    from cnnzoo.models.googlenet import GoogLeNetOutputs

    torch.manual_seed(0)
    target = torch.tensor([1, 0, 2])
    main_, aux2, aux1 = torch.randn(3, 3, 3).unbind(0)
    loss, logits = _loss(GoogLeNetOutputs(main_, aux2, aux1), target, 0.0, 0.3)
    ce = torch.nn.functional.cross_entropy
    expected = ce(main_, target) + 0.3 * (ce(aux1, target) + ce(aux2, target))
    assert torch.allclose(loss, expected)
    assert logits is main_


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet05"], "unknown model 'resnet05'"),
        (["--optimizer", "adamm"], "--optimizer 'adamm' is not one of"),
        (["--dataset", "minst"], "minst"),
        (["--model", "alexnet", "--image-size", "32"], "at least 63×63"),
        (["--resume"], "no checkpoint at"),
        (["--dataset", "mnist", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["--dataset", "imagefolder:/nonexistent/images"], "/nonexistent/images"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--dropout", "0.5"], "lenet5 has no dropout"),
        (["--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    code = main(["train", "--out", str(tmp_path / "run"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_resume_with_another_models_checkpoint_is_refused(reference_runs, tmp_path, capsys):
    import shutil

    shutil.copytree(reference_runs[0], tmp_path / "run")
    code = main(["train", "--model", "mlp", "--out", str(tmp_path / "run"), "--resume"])
    assert code == 2
    assert "checkpoint of 'lenet5', not 'mlp'" in capsys.readouterr().err


def test_an_existing_run_is_never_overwritten(reference_runs, tmp_path, capsys):
    import shutil

    shutil.copytree(reference_runs[0], tmp_path / "run")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert main(["train", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_config_file_gives_options_and_flags_win(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('model = "mlp"\nepochs = 1\nbatch-size = 128\naugment = "none"\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "2", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    resolved = json.loads((out / "config.json").read_text())["config"]
    assert (resolved["model"], resolved["epochs"], resolved["batch_size"]) == ("mlp", 2, 128)
    config.write_text("epoch = 3\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown option 'epoch' (did you mean epochs?)" in capsys.readouterr().err


def test_plain_lines_off_a_terminal_and_nothing_with_quiet(tmp_path, capsys):
    argv = ["train", "--epochs", "1", "--augment", "none", "--channels-last"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "split 1,437/360" in out and "resized 8×8 → 32×32" in out  # what the run did
    assert "epoch 1/1: train loss" in out and "img/s" in out
    assert "final validation accuracy" in out
    assert main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_image_folder_problems_are_named_in_one_line(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(root / "cat" / f"{i}.png")
    argv = ["train", "--dataset", f"imagefolder:{root}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "images/dog has no readable image" in err and err.count("\n") == 1
    for i in range(3):
        Image.new("RGB", (12, 12), (0, i * 40, 0)).save(root / "dog" / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and err.count("\n") == 1
