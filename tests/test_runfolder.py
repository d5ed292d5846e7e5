"""A run folder's rules: what a resume may change (refused before anything is written), the
schedule of an extended run, one writer per folder (the lock), a full disk, a torn metrics
line, and image folders that cannot be validated. In-process runs where possible; separate
processes only for the concurrent runs."""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.errors import DataError, FolderInUseError, InvalidArgumentError
from cnnzoo.training import trainer
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.resume import FIXED, RULES
from cnnzoo.training.runfolder import LOCK_NAME, claim, claimed

# 1,437 digits at batch 256: 6 steps an epoch. The MLP is the cheapest model to train.
FAST = dict(model="mlp", augment="none", batch_size=256, deterministic=True, quiet=True)
STEPS = 6
FAST_ARGS = ["--model", "mlp", "--augment", "none", "--batch-size", "256", "--quiet"]


def digest(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (hidden ones included) → its SHA-256."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


class LrSpy:
    """Wraps the trainer's ``train_one_epoch`` to record the learning rate each step used."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lrs: list[float] = []
        self.after: list[float] = []  # the rate after each epoch's last step
        real = trainer.train_one_epoch

        def spy(net, loader, optimizer, scheduler, **kwargs):
            used = [optimizer.param_groups[0]["lr"]]
            inner = kwargs["on_step"]

            def on_step(n: int, loss: float) -> None:
                used.append(optimizer.param_groups[0]["lr"])
                inner(n, loss)

            stats = real(net, loader, optimizer, scheduler, **{**kwargs, "on_step": on_step})
            self.lrs += used[:-1]
            self.after.append(used[-1])
            return stats

        monkeypatch.setattr(trainer, "train_one_epoch", spy)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A finished 2-epoch run (cosine, warm-up resolved to half an epoch)."""
    out = tmp_path_factory.mktemp("run") / "two"
    trainer.fit(TrainConfig(epochs=2, out=str(out), **FAST))
    return out


def copy_run(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(source, out)
    return out


# --- what a resume may change ------------------------------------------------------------------


def test_every_option_has_a_resume_rule_with_a_reason():
    assert set(RULES) == {f.name for f in fields(TrainConfig)}
    assert all(reason for _, reason in RULES.values())
    for name in ("model", "dataset", "optimizer", "lr", "batch_size", "schedule", "seed"):
        assert RULES[name][0] == FIXED, name


def test_the_documented_table_gives_every_option_its_rule():
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    table = text.split("## Resume with other options")[1].split("\n\n")
    rows = {
        cell.strip("` ")
        for part in table
        for line in part.splitlines()
        if line.startswith("| `--")
        for cell in line.split("|")[1].split(",")
    }
    rule_of = {line.split("|")[1].strip("` "): line.split("|")[2] for part in table
               for line in part.splitlines() if line.startswith("| `--")}  # fmt: skip
    assert rows == {"--" + n.replace("_", "-") for n in RULES}
    for name, (rule, _) in RULES.items():
        flag = "--" + name.replace("_", "-")
        if rule == FIXED:
            assert rule_of[f"{flag}"].strip() == "fixed", flag


def cosine_plan(step: int, *, base: float, warmup: int, total: int) -> float:
    """build_scheduler's documented plan by hand: linear warm-up from 1% of the rate over
    ``warmup`` steps, then half a cosine to 0 after step ``total``."""
    if step < warmup:
        return base * (0.01 + 0.99 * step / warmup)
    return base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def test_more_epochs_follow_the_plan_of_a_run_of_the_new_length(two_epochs, tmp_path, monkeypatch):
    out = copy_run(two_epochs, tmp_path)
    spy = LrSpy(monkeypatch)
    lines: list[str] = []

    class Log(trainer.Reporter):
        def log(self, text: str) -> None:
            lines.append(text)

    config = TrainConfig(epochs=4, out=str(out), resume=True, **FAST)
    result = trainer.fit(config, reporter=Log())
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    # The 2-epoch run resolved its warm-up to half an epoch (3 steps); the resume keeps it.
    warmup, total, base = 3, 4 * STEPS, config.lr
    expected = [cosine_plan(k, base=base, warmup=warmup, total=total) for k in range(12, 24)]
    assert spy.lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert all(a >= b for a, b in itertools.pairwise(spy.lrs))  # non-increasing after warm-up
    assert spy.after[-1] == pytest.approx(0.0, abs=1e-15)  # the plan's end: 0, nothing after it
    said = [line for line in lines if line.startswith("--epochs 2 → 4")]
    assert len(said) == 1 and "cosine schedule of a 4-epoch run from step 12" in said[0]
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["epochs"] == 4 and record["config"]["warmup"] == 0.5
    (entry,) = record["resumes"]
    assert entry["after_epoch"] == 2 and entry["changed"] == {"epochs": [2, 4]}
    # The same rates, to the bit, as a run planned for 4 epochs from the start (with the
    # warm-up the run resolved), stepped by torch's own schedulers.
    fresh_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = trainer.build_scheduler(
        fresh_opt, "cosine", epochs=4, steps_per_epoch=STEPS, warmup_epochs=0.5
    )
    fresh = []
    for _ in range(total):
        fresh.append(fresh_opt.param_groups[0]["lr"])
        fresh_opt.step()
        sched.step()
    assert spy.lrs == fresh[12:]


@pytest.mark.parametrize(
    ("argv", "option", "recorded", "given"),
    [
        (["--optimizer", "sgd"], "--optimizer", "adamw", "sgd"),
        (["--lr", "0.05"], "--lr", "0.002", "0.05"),
        (["--batch-size", "64"], "--batch-size", "256", "64"),
        (["--model", "lenet5"], "--model", "mlp", "lenet5"),
        (["--schedule", "step"], "--schedule", "cosine", "step"),
    ],
)
def test_a_fixed_option_is_refused_in_one_line_before_anything_is_written(
    two_epochs, tmp_path, capsys, argv, option, recorded, given
):
    out = copy_run(two_epochs, tmp_path)
    before = digest(out)
    assert main(["train", "--out", str(out), "--resume", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{option} cannot change when resuming" in err
    assert f"trained with {option} {recorded}, and {given} was given" in err
    assert digest(out) == before  # config.json, checkpoints, metrics: byte-identical


def test_fewer_epochs_than_trained_are_refused(two_epochs, tmp_path, capsys):
    out = copy_run(two_epochs, tmp_path)
    before = digest(out)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 1 is fewer than the 2 epochs" in err and err.count("\n") == 1
    assert digest(out) == before


# --- one writer per folder ---------------------------------------------------------------------


def test_a_held_folder_is_refused_in_one_line_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    lock = claim(out, print)
    try:
        assert main(["train", "--out", str(out), *FAST_ARGS, "--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"is in use by another cnnzoo run (pid {os.getpid()}@" in err and " since " in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    finally:
        lock.release()
    assert not out.exists()  # the claim made the folder, and left it empty: removed


def test_a_stale_lock_is_taken_over_with_a_note_and_released_at_the_end(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    gone = {"pid": 2**22 + 1, "host": "old-host", "since": "2026-01-01 00:00:00 UTC"}
    (out / LOCK_NAME).write_text(json.dumps(gone))  # left by a killed run: no flock on it
    lines: list[str] = []
    lock = claim(out, lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"took over {LOCK_NAME} of pid {gone['pid']}")
    assert "@old-host since 2026-01-01 00:00:00 UTC: that process is gone" in lines[0]
    record = json.loads((out / LOCK_NAME).read_text())
    assert record["pid"] == os.getpid() and record["command"] == sys.argv
    lock.release()
    assert sorted(out.iterdir()) == []  # released: the lock file goes; the folder was there


def test_the_lock_is_released_after_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--dataset", "digitz", *FAST_ARGS]) == 2
    assert not out.exists()  # refused after the claim: folder and lock gone
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    assert main(["train", "--out", str(out), "--dataset", "digitz", *FAST_ARGS]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    capsys.readouterr()


def test_other_ranks_claim_nothing_and_stop_with_rank_0(tmp_path):
    agreed: list[bool] = []

    def any_rank(failed: bool, others: bool) -> bool:  # distributed.any_true, by hand
        agreed.append(failed)
        return failed or others

    with claimed(tmp_path / "run", print, enabled=False, agree=lambda f: any_rank(f, False)):
        assert not (tmp_path / "run").exists()
    # Rank 0 failed to claim: every other rank stops too, instead of waiting for it for ever.
    follower = claimed(tmp_path / "run", print, enabled=False, agree=lambda f: any_rank(f, True))
    with pytest.raises(FolderInUseError, match="rank 0 could not claim"), follower:
        pass
    lock = claim(tmp_path / "run", print)
    try:  # rank 0 itself: its own one-line reason
        main_rank = claimed(tmp_path / "run", print, agree=lambda f: any_rank(f, False))
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}@"), main_rank:
            pass
    finally:
        lock.release()
    assert agreed == [False, False, True]


def test_compare_holds_its_folder(tmp_path):
    from cnnzoo.compare import CompareConfig, run_compare

    out = tmp_path / "cmp"
    lock = claim(out, print)
    try:
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}@"):
            run_compare(CompareConfig(models=["mlp"], epochs=1, out=str(out)))
    finally:
        lock.release()


def test_two_concurrent_trains_on_one_folder_one_runs_the_other_exits_2(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CNNZOO_FAULT", None)
    # LeNet-5 at batch 32 (45 steps): the winner holds the folder for seconds after its claim,
    # far longer than the two processes' start-up times differ.
    argv = [sys.executable, "-m", "cnnzoo", "train", "--model", "lenet5", "--epochs", "1",
            "--batch-size", "32", "--augment", "none", "--quiet", "--out", str(out)]  # fmt: skip
    procs = [subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(p, p.communicate(timeout=300)[1]) for p in procs]
    codes = sorted(p.returncode for p, _ in results)
    assert codes == [0, 2], results
    (winner, _), (_, err) = sorted(results, key=lambda r: r[0].returncode)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"is in use by another cnnzoo run (pid {winner.pid}@" in err
    # One coherent run: the winner's three epochs, its checkpoint, no lock or temporary left.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["history"] == rows
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".*.tmp"))


# --- a full disk, a torn metrics line -------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint_and_stops_in_one_line(
    two_epochs, tmp_path, capsys, monkeypatch
):
    from cnnzoo.training import checkpoint

    real = checkpoint.atomic_write_bytes

    def full_at_epoch_3(path, data, before_second_half=None):
        def no_space() -> None:  # after half of the file is written
            raise OSError(errno.ENOSPC, "No space left on device")

        epoch = torch.load(io.BytesIO(data), weights_only=True)["epoch"]
        real(path, data, no_space if epoch == 3 else before_second_half)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full_at_epoch_3)
    out = copy_run(two_epochs, tmp_path)
    before = (out / "last.pt").read_bytes()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no space left on the device to write {out / 'last.pt'} (" in err
    assert "bytes needed, " in err and " bytes free there" in err
    assert "free some space or write to another disk" in err and "--resume" in err
    assert (out / "last.pt").read_bytes() == before  # epoch 2's checkpoint, intact
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_said_once(two_epochs, tmp_path):
    out = copy_run(two_epochs, tmp_path)
    good = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(good + '{"epoch": 3, "train_lo')
    lines: list[str] = []

    class Log(trainer.Reporter):
        def log(self, text: str) -> None:
            lines.append(text)

    # A harmless option changes on the way: allowed, said, and recorded in the history.
    config = TrainConfig(epochs=2, out=str(out), resume=True, **{**FAST, "num_workers": 1})
    trainer.fit(config, reporter=Log())
    assert (out / "metrics.jsonl").read_text() == good
    assert sum("metrics.jsonl: dropped its last line" in line for line in lines) == 1
    assert "resuming with --num-workers 0 → 1" in lines
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["num_workers"] == 1 and record["config"]["model"] == "mlp"
    assert record["resumes"][-1]["changed"] == {"num_workers": [0, 1]}


def test_a_bad_metrics_line_in_the_middle_is_an_error_naming_it(two_epochs, tmp_path, capsys):
    out = copy_run(two_epochs, tmp_path)
    first, second = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(first[:20] + "\n" + second + "\n")
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'metrics.jsonl'} line 1 is not a JSON object" in err and err.count("\n") == 1


# --- image folders that cannot be validated ----------------------------------------------------


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * c, 20 * i, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("counts", "words"),
    [
        ({"cat": 3}, "has one class (cat): a classifier needs at least 2"),
        ({"cat": 1, "dog": 1}, "the split leaves every class without validation images"),
        ({"cat": 4, "dog": 1}, "the split leaves class dog without validation images"),
    ],
)
def test_data_that_cannot_be_validated_is_refused_in_one_line(tmp_path, capsys, counts, words):
    root = make_folder(tmp_path / "images", counts)
    argv = ["train", "--dataset", f"imagefolder:{root}", "--image-size", "32", "--model", "mlp",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "0.00%" not in err
    if len(counts) > 1:
        assert "add images" in err and "train/ and" in err and "val/ folders" in err


def test_a_train_val_layout_missing_a_validation_class_is_named(tmp_path):
    from cnnzoo.data import load_dataset

    root = tmp_path / "images"
    make_folder(root / "train", {"cat": 2, "dog": 2})
    make_folder(root / "val", {"cat": 1})
    with pytest.raises(DataError, match=r"leaves class dog without validation images: add"):
        load_dataset(f"imagefolder:{root}")


def test_val_fraction_splits_an_image_folder_and_is_checked(tmp_path, capsys):
    from cnnzoo.data import load_dataset

    root = make_folder(tmp_path / "images", {"cat": 4, "dog": 4})
    assert len(load_dataset(f"imagefolder:{root}").val) == 2  # 20% of 4, rounded: 1 per class
    half = load_dataset(f"imagefolder:{root}", val_fraction=0.5)
    assert (len(half.train), len(half.val)) == (4, 4)
    with pytest.raises(InvalidArgumentError, match="digits has a fixed split"):
        load_dataset("digits", val_fraction=0.3)
    assert main(["train", "--val-fraction", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "--val-fraction must be a number in (0, 1), got 1.5" in capsys.readouterr().err


def test_the_lock_is_not_left_behind_by_a_finished_run(two_epochs):
    assert not (two_epochs / LOCK_NAME).exists()
