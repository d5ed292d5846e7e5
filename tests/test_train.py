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
    err = capsys.readouterr().err
    assert "--model cannot change when resuming" in err and err.count("\n") == 1
    assert "trained with --model lenet5, and mlp was given" in err


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


# --- options, sizes and the run's scope -------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('amp = "yes"', "--amp must be true or false, got 'yes'"),
        ('channels-last = "false"', "--channels-last must be true or false, got 'false'"),
        ('deterministic = "no"', "--deterministic must be true or false, got 'no'"),
        ("compile = 1", "--compile must be true or false, got 1"),
        ('epochs = "3"', "--epochs must be a positive integer, got '3'"),
        ("batch-size = 2.0", "--batch-size must be a positive integer, got 2.0"),
        ('lr = "0.1"', "--lr must be a number > 0, got '0.1'"),
        ("label-smoothing = 1.5", "--label-smoothing must be a number in [0, 1), got 1.5"),
        ("num-workers = -1", "--num-workers must be a whole number ≥ 0, got -1"),
        ("model = 5", "--model must be a string, got 5"),
        ('augment = "heavy"', "--augment 'heavy' is not one of none, light, standard"),
    ],
)
def test_config_file_values_are_type_checked_in_one_line(tmp_path, capsys, toml, message):
    config = tmp_path / "train.toml"
    config.write_text(toml + "\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything is made


def test_every_option_has_exactly_one_check():
    from dataclasses import fields

    from cnnzoo.training.config import OPTIONS, TrainConfig

    assert list(OPTIONS) == [f.name for f in fields(TrainConfig)]


@pytest.mark.parametrize("spelling", ["cifar10", "CIFAR10", "cifar-10", "Cifar_10"])
def test_dataset_spellings_train_at_the_datasets_side(spelling):
    from cnnzoo.data.datasets import dataset_key
    from cnnzoo.models import get_spec
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import image_size_rule, resolve_image_size

    # The loader reads all four as cifar10, so the trainer must size them as cifar10: 32, not
    # ResNet-18's 224 (49× the compute).
    assert dataset_key(spelling) == "cifar10"
    config = TrainConfig(model="resnet18", dataset=spelling)
    spec = get_spec("resnet18")
    assert resolve_image_size(config, spec, {}) == 32
    assert image_size_rule(config, spec, {}) == "the images' own side"
    mnist = TrainConfig(model="resnet18", dataset="Fashion_MNIST")
    assert resolve_image_size(mnist, spec, {}) == 28  # not 224


def test_the_digits_loader_and_the_trainer_read_one_name():
    from cnnzoo.data import load_dataset
    from cnnzoo.data.datasets import dataset_key

    assert load_dataset("DIGITS").name == dataset_key("DIGITS") == "digits"


def test_an_image_folder_trains_at_the_models_default_input_and_says_so():
    from cnnzoo.models import get_spec
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import image_size_rule, resolve_image_size

    config = TrainConfig(model="resnet18", dataset="imagefolder:/any/folder")
    spec = get_spec("resnet18")
    assert resolve_image_size(config, spec, {}) == 224
    assert "resnet18's default input" in image_size_rule(config, spec, {})
    assert "--image-size" in image_size_rule(config, spec, {})


def _torch_determinism() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


def test_deterministic_is_undone_when_the_run_returns_and_when_it_raises(tmp_path, monkeypatch):
    from cnnzoo.errors import DataError
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import fit

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _torch_determinism()
    assert before[0] is False
    config = TrainConfig(model="mlp", epochs=1, augment="none", deterministic=True, quiet=True,
                         batch_size=128, out=str(tmp_path / "a"))  # fmt: skip
    fit(config)
    assert _torch_determinism() == before
    bad = TrainConfig(model="mlp", dataset="mnist", data_root=str(tmp_path / "none"),
                      deterministic=True, out=str(tmp_path / "b"))  # fmt: skip
    with pytest.raises(DataError):  # raised after the run switched the mode on
        fit(bad)
    assert _torch_determinism() == before


def test_the_trainer_numbers_epochs_from_1_and_leaves_set_epoch_to_the_loader(
    tmp_path, monkeypatch
):
    from cnnzoo.data import loader as loader_module
    from cnnzoo.training import trainer

    epochs = []

    def spy(dataset, **kwargs):
        if kwargs["shuffle"]:
            epochs.append(kwargs["epoch"])
        return loader_module.make_loader(dataset, **kwargs)

    monkeypatch.setattr(trainer, "make_loader", spy)
    config = trainer.TrainConfig(model="mlp", epochs=2, augment="none", quiet=True,
                                 batch_size=256, out=str(tmp_path))  # fmt: skip
    trainer.fit(config)
    assert epochs == [1, 2]


def test_a_bare_state_dict_says_once_how_the_images_are_normalised(tmp_path, capsys):
    from cnnzoo import create_model

    torch.manual_seed(0)
    weights = tmp_path / "bare.pt"
    torch.save(create_model("lenet5", num_classes=10, in_chans=3).state_dict(), weights)
    argv = ["train", "--weights", str(weights), "--epochs", "1", "--augment", "none",
            "--batch-size", "256", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # The data's own statistics are used (digits: one channel), and only that is said.
    assert out.count("normalised with the training split's mean/std") == 1
    assert "assuming" not in out and "averaged" not in out
    assert "3 input channels summed into 1" in out  # the rest of the load report is kept


def test_compile_on_the_cpu_drops_only_torchs_no_cuda_runtime_line(caplog):
    import logging

    from cnnzoo.training.trainer import _quiet_compile_on_cpu

    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING, logger=logger.name), _quiet_compile_on_cpu(True):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        logger.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]
    assert not logger.filters  # removed with the run
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/x")
    assert len(caplog.records) == 1


def test_train_help_says_which_optimizers_use_momentum(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--momentum MOMENTUM for the momentum and nesterov optimizers" in help_text
    assert "rmsprop (" not in help_text.split("--momentum")[1].split("--")[0]


def test_a_reporter_can_stop_the_run_which_is_then_finished_as_it_is(tmp_path):
    from cnnzoo.progress import Reporter
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import fit

    class StopAfterTwo(Reporter):
        def should_stop(self, history):
            return len(history) >= 2

    config = TrainConfig(model="mlp", epochs=4, augment="none", batch_size=256, quiet=True,
                         out=str(tmp_path))  # fmt: skip
    result = fit(config, reporter=StopAfterTwo())
    assert result.stopped and [h["epoch"] for h in result.history] == [1, 2]
    assert len(metrics(tmp_path)) == 2
    for name in ("model.safetensors", "curves.png", "confusion.png"):
        assert (tmp_path / name).is_file(), name
    # The weights are the last trained epoch's, as in its checkpoint.
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    weights = load_file(tmp_path / "model.safetensors")
    assert state["epoch"] == 2 and all(torch.equal(weights[k], state["model"][k]) for k in weights)
