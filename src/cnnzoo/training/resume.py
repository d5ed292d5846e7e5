"""What ``--resume`` may change, checked before anything is written, and the schedule of a run
whose ``--epochs`` changed.

A resumed run is the same run continued, so most options are fixed at its start: the
checkpoint's model, optimizer state, data order and schedule were made with them. The table
:data:`RULES` says for every option of :class:`~cnnzoo.training.config.TrainConfig` whether a
resume may change it and why (docs/training.md shows it). A fixed option given another value is
refused in one line naming the option, the recorded value and the value given, before the run
writes anything. ``--epochs`` may change to no fewer than the epochs trained: the learning rate
then follows the schedule of a run planned for the new length from the current step on (see
:func:`follow_new_plan`).

On the command line, options left out of a ``--resume`` are the run's own (read from its
``config.json`` by :func:`resume_options`), so ``cnnzoo train --out D --resume`` continues the
run as it was started, and ``--resume --epochs 8`` extends it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from cnnzoo.errors import CheckpointError, InvalidArgumentError
from cnnzoo.training import checkpoint
from cnnzoo.training.config import TrainConfig

FIXED, FREE, EPOCHS, NOT_A_RUN_OPTION = "fixed", "may change", "may grow", "-"
LAST, CONFIG = "last.pt", "config.json"

# Every option of TrainConfig: may a resume change it, and why (docs/training.md's table).
RULES: dict[str, tuple[str, str]] = {
    "model": (FIXED, "the checkpoint holds this architecture's weights"),
    "dataset": (FIXED, "other data is another run: classes, split and normalisation change"),
    "data_root": (FREE, "the same files may have moved; the classes are checked against the run"),
    "download": (FREE, "only whether missing files are fetched"),
    "epochs": (
        EPOCHS,
        "to no fewer than the epochs trained; the learning rate then follows the schedule of a "
        "run planned for the new length from the current step on",
    ),
    "batch_size": (FIXED, "steps per epoch, the data order and the schedule's steps change"),
    "optimizer": (FIXED, "the optimizer's state (moments, momentum) belongs to its algorithm"),
    "lr": (FIXED, "the schedule and the optimizer's state were built around it"),
    "momentum": (FIXED, "part of the optimizer's state and update"),
    "weight_decay": (FIXED, "part of the optimizer's update: the objective changes"),
    "schedule": (FIXED, "the learning-rate plan; only its length follows --epochs"),
    "warmup": (FIXED, "the warm-up is part of the plan (the default is resolved at the start)"),
    "label_smoothing": (FIXED, "the loss being minimised changes"),
    "augment": (FIXED, "the images the run trains on change"),
    "dropout": (FIXED, "the model changes"),
    "image_size": (FIXED, "the model's input changes"),
    "seed": (FIXED, "every epoch's data order and augmentation derive from it"),
    "val_fraction": (FIXED, "the split of an image folder changes"),
    "deterministic": (FREE, "which kernels run, not what they compute"),
    "device": (FREE, "the same computation on other hardware (checkpoints load on any device)"),
    "amp": (FREE, "the precision of the forward pass, not the run's plan"),
    "channels_last": (FREE, "memory layout only"),
    "compile": (FREE, "the same computation, compiled"),
    "out": (NOT_A_RUN_OPTION, "the run's folder itself"),
    "resume": (NOT_A_RUN_OPTION, "asks for the resume"),
    "checkpoint_every": (FREE, "when checkpoints are written, not what is computed"),
    "epoch_checkpoints": (FREE, "whether checkpoints are written, not what is computed"),
    "num_workers": (
        FREE,
        "loading processes; with augmentation, going from none to some (or back) changes the "
        "random draws (batches loaded in workers are seeded from seed, epoch and batch number)",
    ),
    "quiet": (FREE, "console output only"),
    "aux_weight": (FIXED, "the loss being minimised changes"),
    "weights": (FIXED, "the starting point and the normalisation it brings"),
    "freeze": (FIXED, "which parameters train: the optimizer's groups change"),
    "head_lr": (FIXED, "the optimizer's groups and their rates change"),
}

# Options whose None means "the rule's value": a resume that leaves them out keeps the run's.
_RESOLVED = ("warmup", "image_size")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if value is None:
        return "(not set)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def recorded_options(out: Path) -> dict[str, Any]:
    """The options the run in ``out`` runs with: its ``config.json`` (written at every start,
    so it holds the latest resume's ``--epochs``), or ``{}`` when there is none."""
    path = Path(out) / CONFIG
    try:
        return dict(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def resume_options(out: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """The options of a command-line ``--resume``: the run's recorded ones, with those given on
    the command line (or in a config file) on top."""
    names = {f.name for f in fields(TrainConfig)}
    keep = {k: v for k, v in recorded_options(Path(out)).items() if k in names}
    for name in ("out", "resume"):
        keep.pop(name, None)
    return keep | given


def _checkpoint_record(path: Path) -> dict[str, Any]:
    """The checkpoint's epoch and config, read without copying its tensors (memory-mapped: a
    VGG checkpoint is 1.5 GB, and the trainer loads it in full later)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # let checkpoint.load say what is wrong with the file, in one line
        state = checkpoint.load(path)
    return {"epoch": state["epoch"], "config": state.get("config", {})}


def check_options(
    config: TrainConfig, log: Callable[[str], None]
) -> tuple[TrainConfig, dict[str, list[Any]]]:
    """Check a resume's options against the run in ``config.out``, before anything is written.

    Returns:
        The config to run (``None`` for ``--warmup``/``--image-size`` replaced by the run's own
        values) and the options changed, ``{name: [recorded, given]}``.

    Raises:
        InvalidArgumentError: a fixed option given another value, or fewer epochs than trained.
        CheckpointError: the checkpoint cannot be read.
    """
    out = Path(config.out)
    path = out / LAST
    if not path.is_file():
        return config, {}  # the trainer's own "no checkpoint" error follows
    record = _checkpoint_record(path)
    recorded, trained = record["config"], record["epoch"]
    adopted = {n: recorded[n] for n in _RESOLVED if getattr(config, n) is None and n in recorded}
    config = replace(config, **adopted)
    changes: dict[str, list[Any]] = {}
    for name, (rule, reason) in RULES.items():
        if rule == NOT_A_RUN_OPTION or name not in recorded:
            continue
        before, now = recorded[name], getattr(config, name)
        if before == now:
            continue
        if rule == FIXED:
            raise InvalidArgumentError(
                f"{_flag(name)} cannot change when resuming ({reason}): {out} was trained with "
                f"{_flag(name)} {_show(before)}, and {_show(now)} was given; leave "
                f"{_flag(name)} out to continue the run, or train into another --out."
            )
        if rule == EPOCHS and now < trained:
            raise InvalidArgumentError(
                f"--epochs {now} is fewer than the {trained} epochs {out} has trained: give "
                f"--epochs {trained} or more."
            )
        changes[name] = [before, now]
    # A changed --epochs has its own line, where the schedule is re-planned.
    said = [f"{_flag(n)} {_show(a)} → {_show(b)}" for n, (a, b) in changes.items() if n != "epochs"]
    if said:
        log(f"resuming with {', '.join(said)}")
    return config, changes


def history_entry(changes: dict[str, list[Any]], after_epoch: int) -> dict[str, Any]:
    """One item of ``config.json``'s ``resumes``: when, after which epoch, what changed."""
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "after_epoch": after_epoch,
        "changed": changes,
    }


def previous_resumes(out: Path) -> list[dict[str, Any]]:
    """The ``resumes`` history of the run's ``config.json`` (``[]`` for none)."""
    try:
        resumes = json.loads((Path(out) / CONFIG).read_text()).get("resumes", [])
    except (OSError, ValueError, AttributeError):
        return []
    return list(resumes) if isinstance(resumes, list) else []


# Keys the schedulers keep in an optimizer's parameter groups.
_SCHEDULE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def follow_new_plan(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    make: Callable[[], tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]],
    steps_done: int,
) -> None:
    """Put ``scheduler`` (built for the new length) and ``optimizer``'s rates at step
    ``steps_done`` of the new plan: exactly where a run planned for that length from the start
    would be, to the bit (the same scheduler stepped as many times, on a stand-in optimizer
    from ``make()`` over the same parameters, so the loaded optimizer state is not touched).

    Why this plan and not "the old rate, decayed over the remaining steps": a schedule that
    has ended (cosine at 0) would then never train again, and extending a finished run is the
    common case. The rate may therefore step up at the resume point (a longer cosine is higher
    at the same step); from there it follows the new plan, which never rises after its end.
    """
    stand_in, plan = make()
    with warnings.catch_warnings():
        # "lr_scheduler.step() before optimizer.step()": the stand-in never steps, on purpose.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps_done):
            plan.step()
    scheduler.load_state_dict(plan.state_dict())
    for group, planned in zip(optimizer.param_groups, stand_in.param_groups, strict=True):
        for key in _SCHEDULE_KEYS:
            if key in planned:
                group[key] = planned[key]


def check_classes(out: Path, class_names: list[str]) -> None:
    """A resume whose data (``--data-root`` may move) has other classes than the run's."""
    try:
        recorded = json.loads((Path(out) / CONFIG).read_text())["dataset"]["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if list(recorded) != list(class_names):
        raise CheckpointError(
            f"the data has classes {', '.join(class_names)}, but {out} was trained on "
            f"{', '.join(recorded)}: point --data-root at the run's data, or train into another "
            "--out."
        )
