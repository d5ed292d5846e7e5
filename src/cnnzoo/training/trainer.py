"""A whole training run: resolve the options, build data, model and optimizer, run the epochs,
and leave everything in ``--out`` (config, metrics, checkpoints, weights, plots).

Exact resume: each epoch's data order and augmentations are seeded from (seed, epoch[, batch]),
and the checkpoint (written at the end of an epoch, every ``--checkpoint-every`` steps and when a
signal stops the run) holds the model, optimizer, scheduler, every random generator's state and,
mid-epoch, the position in the epoch (:class:`~cnnzoo.training.loop.Position`). A resumed run
therefore goes on exactly as the uninterrupted run did (bitwise on CPU with ``--deterministic``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import check_input
from cnnzoo.data import DataBundle, load_dataset, make_loader
from cnnzoo.data.datasets import native_side
from cnnzoo.environment import environment
from cnnzoo.errors import CheckpointError, DiskFullError, InvalidArgumentError
from cnnzoo.factory import create_model
from cnnzoo.fileio import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from cnnzoo.models import get_spec
from cnnzoo.progress import Reporter
from cnnzoo.training import checkpoint, distributed, resume, runfolder
from cnnzoo.training.amp import guard_bf16_convolutions
from cnnzoo.training.config import TrainConfig, training_options
from cnnzoo.training.loop import EpochStats, EvalStats, Position, evaluate, train_one_epoch
from cnnzoo.training.optim import build_optimizer, build_scheduler
from cnnzoo.training.signals import StopRequest, stop_on_signals

LAST, BEST, WEIGHTS = "last.pt", "best.pt", "model.safetensors"
CUBLAS = "CUBLAS_WORKSPACE_CONFIG"  # cuBLAS's deterministic mode needs a fixed workspace


@dataclass
class RunResult:
    """What a finished run reports: final metrics and where its files are."""

    out: Path
    history: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    main_process: bool = True  # False on the other ranks of a distributed run
    stopped: bool = False  # the reporter stopped it before its last epoch
    # Set when a signal stopped it: which, and where ("epoch 2, step 17 of 45").
    interrupted: str | None = None
    world_size: int = 1

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, forbid the non-deterministic kernels (so that a CPU run repeats bit for
    bit); afterwards, also when the block raises, restore torch's settings as they were: a
    library call must not change the process it runs in."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    cublas = os.environ.get(CUBLAS)
    os.environ.setdefault(CUBLAS, ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]
        if cublas is None:
            os.environ.pop(CUBLAS, None)


class _NoCudaRuntimeNote(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." (logged when
    ``torch.compile`` loads its C++ toolchain on a machine with a CUDA toolkit but no GPU): on a
    CPU run it is expected and says nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


@contextlib.contextmanager
def _quiet_compile_on_cpu(active: bool) -> Iterator[None]:
    """The filter above on torch's ``cpp_extension`` logger for the run, removed afterwards."""
    if not active:
        yield
        return
    logger, note = logging.getLogger("torch.utils.cpp_extension"), _NoCudaRuntimeNote()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available[name]:
        raise InvalidArgumentError(f"--device {name} is not available here: use --device cpu.")
    return torch.device(name)


def resolve_image_size(config: TrainConfig, spec: cnnzoo.ModelSpec, options: dict) -> int:
    """The side images are resized to; :func:`image_size_rule` says why."""
    return _image_size(config, spec, options)[0]


def image_size_rule(config: TrainConfig, spec: cnnzoo.ModelSpec, options: dict) -> str:
    """Why the run trains at :func:`resolve_image_size`'s side, for the log."""
    return _image_size(config, spec, options)[1]


def _image_size(config: TrainConfig, spec: cnnzoo.ModelSpec, options: dict) -> tuple[int, str]:
    """``--image-size`` if given (checked against the model), else the data's native side moved
    into the model's valid range (up to its minimum, or to its fixed size). An image folder,
    whose images may differ in size, trains at the model's default input: the size its
    architecture and any pretrained weights were made for, and a cost that does not depend on
    how large the photos are (``--image-size`` chooses another)."""
    if config.image_size is not None:
        check_input(
            spec.name, (spec.input_size[0], config.image_size, config.image_size), **options
        )
        return config.image_size, "--image-size"
    native = native_side(config.dataset)  # any spelling the loader accepts (CIFAR10, cifar-10)
    if native is None:
        return spec.input_size[1], (
            f"{spec.name}'s default input: an image folder has no one image size (choose "
            "another with --image-size)"
        )
    side = spec.fit_side(native, **options)  # the rule compare's plan uses too
    if side == native:
        return side, "the images' own side"
    if spec.size_range(**options)[1] is not None:
        return side, f"{spec.name}'s fixed input ({native} is outside its range)"
    return side, f"{spec.name}'s smallest input (the images are {native}×{native})"


def _check_amp(config: TrainConfig, device: torch.device) -> None:
    """``--amp`` on a CPU needs bfloat16 instructions: without them torch emulates bf16 in
    software, several times slower than fp32, which is never what ``--amp`` is asked for."""
    if not config.amp or device.type != "cpu":
        return
    # The one test of the CPU's flags, shared with inference's bf16 backends.
    from cnnzoo.inference.backends import bf16_capable

    if not bf16_capable():
        raise InvalidArgumentError(
            "--amp trains in bfloat16, and this CPU has no bfloat16 instructions (avx512_bf16 "
            "or AMX): leave out --amp to train in fp32 (--no-amp to resume a run trained with it)."
        )


def _model_options(config: TrainConfig, spec: cnnzoo.ModelSpec) -> dict[str, Any]:
    options = training_options(spec)
    if config.dropout is not None:
        if "dropout" not in spec.accepts():
            raise InvalidArgumentError(
                f"{spec.name} has no dropout layer to set: leave out --dropout."
            )
        options = {"dropout": config.dropout, **options}
    return options


def _save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=metadata))


def fit(
    config: TrainConfig, argv: list[str] | None = None, reporter: Reporter | None = None
) -> RunResult:
    """Run the training that ``config`` describes; return the history and where files went.

    The run ends after ``config.epochs`` epochs, or earlier when ``reporter.should_stop``
    says so before an epoch (the epochs trained are kept and the weights written as for a
    finished run; ``RunResult.stopped`` is then true). SIGTERM or SIGINT (in the main thread)
    ends it after the current step with a checkpoint to resume from and no weights file
    (``RunResult.interrupted`` says where; :mod:`cnnzoo.training.signals`).

    Raises:
        CnnzooError: a bad option, dataset, image size or checkpoint (one line each).
        TrainingDivergedError: the loss became NaN or infinite (on any process).
    """
    device = resolve_device(config.device)
    info = distributed.init(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    # Only rank 0 talks; the others train silently.
    reporter = reporter if reporter is not None and info.is_main else Reporter()
    quiet_compile = config.compile and device.type != "cuda"
    # Rank 0 holds the folder for the whole run; everything that reads it comes after the claim.
    claim = runfolder.claimed(
        config.out, reporter.log, enabled=info.is_main,
        agree=lambda failed: distributed.any_true(failed, info),
    )  # fmt: skip
    try:
        with (
            deterministic_mode(config.deterministic),
            _quiet_compile_on_cpu(quiet_compile),
            claim,
            stop_on_signals() as signals,
        ):
            resuming = _resuming(config, Path(config.out), info)
            changes: dict[str, list[Any]] = {}
            if resuming:  # refused here, before anything is written
                config, changes = resume.check_options(config, reporter.log)
            _check_amp(config, device)
            run = _build(config, reporter.log, device, info)
            if resuming:
                _resume(run, reporter.log, changes)
            _wrap(run)
            _record(run, argv, reporter.log)
            stats, stopped = _train_epochs(run, reporter, signals)
            if run.interrupted is None and info.is_main:
                _finish(run, stats)
            return RunResult(
                run.out, run.history, run.notes, info.is_main, stopped, run.interrupted,
                info.world_size,
            )  # fmt: skip
    except DiskFullError as err:
        if not (Path(config.out) / LAST).is_file():
            raise
        raise DiskFullError(f"{err} Then continue with --resume.") from None
    finally:
        distributed.shutdown(info)


@dataclass
class _Run:
    """One run as built (:func:`_build`) and trained: what the epochs read and change."""

    config: TrainConfig
    info: distributed.Dist
    device: torch.device
    out: Path
    options: dict[str, Any]
    image_size: int
    data: DataBundle
    model: nn.Module  # the model itself: checkpoints, evaluation, weights
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_sampler: torch.utils.data.DistributedSampler | None
    val_loader: torch.utils.data.DataLoader
    per_rank_batch: int
    notes: list[str]
    # Read once: every checkpoint and config.json record the same versions.
    versions: dict[str, Any] = field(default_factory=lambda: environment()["versions"])
    net: nn.Module | None = None  # what trains: the model, DDP-wrapped and/or compiled
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 1
    best_acc: float = -1.0
    resumes: list[dict[str, Any]] = field(default_factory=list)  # config.json's history
    position: Position | None = None  # where a mid-epoch checkpoint left the start epoch
    interrupted: str | None = None


def _build(config: TrainConfig, log, device: torch.device, info: distributed.Dist) -> _Run:
    """Folders, data, model (from weights or fresh, frozen as asked), samplers, optimizer and
    schedule, in the order that fixes the random draws (a resumed run repeats them)."""
    spec = get_spec(config.model)
    options = _model_options(config, spec)
    image_size, size_rule = _image_size(config, spec, options)
    out = _prepare_out(config, log, info)
    seed_everything(config.seed)
    data = load_dataset(
        config.dataset, root=config.data_root, image_size=image_size, augment=config.augment,
        seed=config.seed, download=config.download, val_fraction=config.val_fraction,
    )  # fmt: skip
    notes = [*data.notes, f"image side {image_size}: {size_rule}"]
    model, data = _build_model(config, options, data, notes)
    model = _place(model, config, device)
    if config.amp and device.type == "cpu":
        notes.append(
            "--amp: bfloat16 autocast in training and validation, fp32 weights and optimizer"
        )
        if not config.channels_last:  # oneDNN's bf16 convolutions prefer NHWC
            notes.append(
                "--amp without --channels-last: networks of wide convolutions train faster with "
                "both (resnet18_cifar at 32 px: 2.08x fp32 with both, 1.84x with --amp alone)"
            )

    train_sampler, val_loader, per_rank_batch = _sampling(config, data, info)
    steps_per_epoch = -(-len(train_sampler or data.train) // per_rank_batch)
    optimizer, scheduler = _optimization(config, model, steps_per_epoch)
    return _Run(
        config, info, device, out, options, image_size, data, model, optimizer, scheduler,
        train_sampler, val_loader, per_rank_batch, notes,
    )  # fmt: skip


def _place(model: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """The model on ``device``, channels_last if asked, and with ``--amp`` on the CPU the
    convolutions whose bf16 weight gradient torch gets wrong on one-pixel maps guarded
    (:mod:`cnnzoo.training.amp`)."""
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.amp and device.type == "cpu":
        guard_bf16_convolutions(model)
    return model


def _optimization(
    config: TrainConfig, model: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and the schedule planned over ``config.epochs``."""
    optimizer = build_optimizer(
        model, config.optimizer, lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay, head_lr=config.head_lr,
    )  # fmt: skip
    scheduler = build_scheduler(
        optimizer, config.schedule, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
    )  # fmt: skip
    return optimizer, scheduler


def _sampling(
    config: TrainConfig, data: DataBundle, info: distributed.Dist
) -> tuple[torch.utils.data.DistributedSampler | None, torch.utils.data.DataLoader, int]:
    """Each process's share: the training sampler (DDP only; the epoch's loader is made per
    epoch), the validation loader and the batch per process."""
    if config.batch_size % info.world_size:
        raise InvalidArgumentError(
            f"--batch-size {config.batch_size} is the global batch and must divide evenly over "
            f"{info.world_size} processes."
        )
    per_rank_batch = config.batch_size // info.world_size
    train_sampler: torch.utils.data.DistributedSampler | None = None
    val_set: torch.utils.data.Dataset = data.val
    if info.enabled:
        train_sampler = torch.utils.data.DistributedSampler(
            data.train, info.world_size, info.rank, shuffle=True, seed=config.seed
        )
        # Disjoint, unpadded validation shards: every image is evaluated exactly once.
        val_set = torch.utils.data.Subset(
            data.val, range(info.rank, len(data.val), info.world_size)
        )
    val_loader = make_loader(
        val_set, batch_size=256, shuffle=False, seed=config.seed, epoch=0,
        num_workers=config.num_workers,
    )  # fmt: skip
    return train_sampler, val_loader, per_rank_batch


def _prepare_out(config: TrainConfig, log, info: distributed.Dist) -> Path:
    """``--out``, created by the main process, with temporaries of a killed run removed; a
    folder holding a run is refused unless the run is resumed."""
    out = Path(config.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):
            log(f"removed {stale.name}, left by a run killed while writing")
    if (out / LAST).exists() and not config.resume:
        raise CheckpointError(
            f"{out} already holds a run: add --resume to continue it, or choose another --out."
        )
    return out


# What load_weights says about a file's preprocessing when the file records none: when the
# trainer then normalises with the data's own statistics, these lines are not what happens.
_ASSUMED_NOTES = ("the file records no preprocessing", "mean/std averaged", "mean/std repeated")


def _build_model(
    config: TrainConfig, options: dict[str, Any], data: DataBundle, notes: list[str]
) -> tuple[nn.Module, DataBundle]:
    """The model, fresh or from ``--weights`` (then the data is normalised as the weights
    were trained, when they say how), frozen as asked; notes say what was done."""
    if not config.weights:
        model = create_model(
            config.model, num_classes=data.num_classes, in_chans=data.in_chans, **options
        )
    else:
        from cnnzoo.weights import load_weights

        model, report = load_weights(
            config.model, config.weights, num_classes=data.num_classes, in_chans=data.in_chans,
            **options,
        )  # fmt: skip
        pre = model.pretrained_cfg
        if pre.source == "assumed":
            report.notes = [n for n in report.notes if not n.startswith(_ASSUMED_NOTES)]
        notes += [f"weights {config.weights}:", *("  " + line for line in report.lines())]
        if pre.source == "assumed":
            notes.append("normalised with the training split's mean/std: the weights record none")
        else:
            data = data.with_normalization(
                pre.mean, pre.std, f"the weights were trained ({pre.source})"
            )
            notes.append(data.notes[-1])
    frozen = model.freeze(config.freeze)
    if frozen:
        notes.append(f"frozen (no gradients, BatchNorm statistics fixed): {', '.join(frozen)}")
    return model, data


def _resume(run: _Run, log, changes: dict[str, list[Any]]) -> None:
    """Model, optimizer, schedule, history and random generators from ``last.pt``; the
    options changed (:func:`resume.check_options`) recorded, the schedule re-planned when
    ``--epochs`` changed, a torn last line of ``metrics.jsonl`` dropped."""
    path = run.out / LAST
    state = checkpoint.load(path)
    if state.get("model_name") != run.config.model:
        raise CheckpointError(
            f"{path} is a checkpoint of {state.get('model_name')!r}, not "
            f"{run.config.model!r}: resume with --model {state.get('model_name')} or another "
            "--out."
        )
    resume.check_classes(run.out, run.data.class_names)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if "epochs" in changes:
        _follow_new_plan(run, state, log)
    else:
        run.scheduler.load_state_dict(state["scheduler"])
    run.history = list(state["history"])
    run.start_epoch, run.best_acc = state["epoch"] + 1, state["best_acc"]
    checkpoint.set_rng_state(state["rng"])
    run.resumes = [*resume.previous_resumes(run.out), resume.history_entry(changes, state["epoch"])]
    if run.info.is_main:
        runfolder.repair_metrics(run.out, log)
    if "position" in state:  # a mid-epoch checkpoint
        run.position = _position_from(state["position"], path, run.info)
        log(f"resumed from {path} at epoch {run.position.epoch}, step {run.position.step}")
    else:
        log(f"resumed from {path} after epoch {state['epoch']}")


def _resuming(config: TrainConfig, out: Path, info: distributed.Dist) -> bool:
    """``--resume``, or ``--resume auto`` and ``out`` holds a run (rank 0 looks, all follow:
    a process must not start afresh while the others resume)."""
    if config.resume != "auto":
        return bool(config.resume)
    return distributed.any_true(info.is_main and (out / LAST).exists(), info)


def _follow_new_plan(run: _Run, state: dict[str, Any], log) -> None:
    """``--epochs`` changed: the rates of a run planned for the new length, from this step."""
    config = run.config
    steps = state["scheduler"]["last_epoch"]  # schedule steps taken (one per optimiser step)
    steps_per_epoch = -(-len(run.train_sampler or run.data.train) // run.per_rank_batch)
    was = run.optimizer.param_groups[0]["lr"]
    resume.follow_new_plan(
        run.optimizer, run.scheduler, lambda: _optimization(config, run.model, steps_per_epoch),
        steps,
    )  # fmt: skip
    log(
        f"--epochs {state['config']['epochs']} → {config.epochs}: the learning rate follows the "
        f"{config.schedule} schedule of a {config.epochs}-epoch run from step {steps:,} on "
        f"(lr {run.optimizer.param_groups[0]['lr']:.3g} now; the {state['config']['epochs']}-epoch "
        f"plan was at {was:.3g}), to that plan's end, never restarting after it"
    )


def _wrap(run: _Run) -> None:
    """What trains: the model under DDP when distributed, compiled when asked."""
    net: nn.Module = run.model
    if run.info.enabled:
        net = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    # torch.compile's stub returns a plain Callable; given an nn.Module it returns a module that
    # wraps it (OptimizedModule).
    run.net = cast(nn.Module, torch.compile(net)) if run.config.compile else net


def _resolved(run: _Run) -> dict[str, Any]:
    return run.config.to_dict() | {
        "image_size": run.image_size,
        "in_chans": run.data.in_chans,
        "warmup": run.config.warmup_epochs,
    }


def _record(run: _Run, argv: list[str] | None, log) -> None:
    """``config.json`` (main process), then the notes and what trains, in the log."""
    config, data, info = run.config, run.data, run.info
    if info.is_main:
        record = {
            "config": _resolved(run),
            "model_options": run.options,
            "dataset": {"classes": data.class_names, "mean": data.mean, "std": data.std},
            "world_size": info.world_size,
            "versions": run.versions,
            "command": argv if argv is not None else sys.argv,
            "notes": run.notes,
            "resumes": run.resumes,
        }
        atomic_write_text(run.out / "config.json", json.dumps(record, indent=2))
    for note in run.notes:
        log(note)
    params = sum(p.numel() for p in run.model.parameters())
    side = run.image_size
    log(
        f"training {config.model} ({params:,} params) on {config.dataset} at "
        f"{data.in_chans}×{side}×{side}, {len(data.train):,} train / {len(data.val):,} val "
        f"images, {config.epochs} epochs, {run.device.type}"
        + (f", {info.world_size} processes" if info.enabled else "")
    )


def _train_epochs(
    run: _Run, reporter: Reporter, signals: StopRequest
) -> tuple[EvalStats | None, bool]:
    """The epochs: train, evaluate, record, checkpoint. Returns the last evaluation (``None``
    when no epoch ran) and whether the reporter stopped the run early. A signal stops it after
    the current step (or the next epoch's first, when it came between steps), with a checkpoint
    there (``run.interrupted`` says where)."""
    config, data, info = run.config, run.data, run.info
    assert run.net is not None  # _wrap ran before the epochs
    stats = None
    for epoch in range(run.start_epoch, config.epochs + 1):
        # Every process asks, so that all stop together (only rank 0's reporter can say yes).
        if distributed.any_true(reporter.should_stop(run.history), info):
            return stats, True
        # A resumed epoch goes on from its checkpoint's position: the loader starts at the
        # next batch of the same order, the sums where they were.
        position, run.position = run.position or Position(epoch, _lr(run)), None
        # The loader seeds this epoch's order and augmentations (and tells the sampler).
        train_loader = make_loader(
            data.train, batch_size=run.per_rank_batch, shuffle=run.train_sampler is None,
            seed=config.seed, epoch=epoch, num_workers=config.num_workers,
            sampler=run.train_sampler, start=position.step,
        )  # fmt: skip
        steps = position.step + len(train_loader)
        reporter.start_epoch(epoch, config.epochs, len(train_loader))
        train = train_one_epoch(
            run.net, train_loader, run.optimizer, run.scheduler, epoch=epoch, device=run.device,
            dist=info, label_smoothing=config.label_smoothing, aux_weight=config.aux_weight,
            amp=config.amp, channels_last=config.channels_last, on_step=reporter.step,
            position=position, checkpoint_every=config.checkpoint_every,
            save=lambda p: _save_position(run, p), stop_requested=signals.requested,
        )  # fmt: skip
        reporter.end_epoch()
        if train.stopped:
            where = f"epoch {epoch}, step {position.step} of {steps}"
            run.interrupted = f"{signals.name} at {where}"
            return stats, False
        stats = evaluate(
            run.model, run.val_loader, data.num_classes, device=run.device, dist=info,
            amp=config.amp, channels_last=config.channels_last,
        )  # fmt: skip
        run.history.append(_epoch_row(epoch, train, stats, position.lr))
        improved = stats.acc > run.best_acc
        run.best_acc = max(run.best_acc, stats.acc)
        if info.is_main:
            _save_epoch(run, epoch, improved)
        distributed.barrier(info)
        reporter.log(_epoch_line(run.history[-1], config.epochs))
    return stats, False


def _epoch_row(epoch: int, train: EpochStats, stats: EvalStats, lr: float) -> dict[str, Any]:
    """One line of ``metrics.jsonl``."""
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_acc": train.acc,
        "val_loss": stats.loss,
        "val_acc": stats.acc,
        **({"val_top5": stats.top5} if stats.top5 is not None else {}),
        "val_images": stats.images,
        "lr": lr,
        "seconds": train.seconds,
        "images_per_s": train.images / train.seconds if train.seconds else 0.0,
    }


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    top5 = f" top-5 {100 * row['val_top5']:.2f}%" if "val_top5" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc "
        f"{100 * row['train_acc']:.2f}% | val loss {row['val_loss']:.4f} acc "
        f"{100 * row['val_acc']:.2f}%{top5} | {row['images_per_s']:.0f} img/s"
    )


def _lr(run: _Run) -> float:
    return run.optimizer.param_groups[0]["lr"]


def _state(run: _Run, epoch: int) -> dict[str, Any]:
    """What ``last.pt`` holds after ``epoch`` whole epochs (and the random generators now)."""
    return {
        "model_name": run.config.model,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": epoch,
        "best_acc": run.best_acc,
        "history": run.history,
        "config": _resolved(run),
        "metadata": _metadata(run.config, run.data, run.image_size),
        "rng": checkpoint.rng_state(),
        "versions": run.versions,
    }


def _save_position(run: _Run, position: Position) -> None:
    """A mid-epoch ``last.pt``: the state after ``position.step`` steps of ``position.epoch``,
    and the position. Every process calls it at the same step: each one's sums (its shard of
    the epoch) are gathered, so that each process resumes with its own; the main one writes."""
    info = run.info
    sums = torch.zeros(info.world_size, 3, dtype=torch.float64)  # exact: float64 and counts
    own = [position.loss_sum, position.correct, position.images]
    sums[info.rank] = torch.tensor(own, dtype=torch.float64)
    distributed.all_reduce_sum(sums, info)  # a gather: every other row is zero
    record = {"epoch": position.epoch, "lr": position.lr, "step": position.step,
              "seconds": position.seconds, "shards": sums.tolist()}  # fmt: skip
    if info.is_main:
        state = _state(run, position.epoch - 1) | {"position": record}
        checkpoint.save(run.out / LAST, state, position.epoch, position.step)


def _position_from(record: dict[str, Any], path: Path, info: distributed.Dist) -> Position:
    """This process's :class:`Position` from a mid-epoch checkpoint's record."""
    shards = record["shards"]
    if len(shards) != info.world_size:
        raise CheckpointError(
            f"{path} was written by {len(shards)} processes in the middle of epoch "
            f"{record['epoch']}: resume it with {len(shards)} (each holds a share of the "
            "epoch's data)."
        )
    loss_sum, correct, images = shards[info.rank]
    return Position(
        record["epoch"], record["lr"], record["step"], loss_sum, int(correct), int(images),
        record["seconds"],
    )  # fmt: skip


def _save_epoch(run: _Run, epoch: int, improved: bool) -> None:
    """``metrics.jsonl`` and ``last.pt`` (``best.pt`` too when the accuracy improved); only the
    metrics without ``epoch_checkpoints``."""
    out = run.out
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in run.history))
    if not run.config.epoch_checkpoints:
        return
    checkpoint.save(out / LAST, _state(run, epoch), epoch)
    if improved:  # the same bytes: linked, not written again (VGG: 1.5 GB an epoch)
        atomic_copy(out / LAST, out / BEST)


def _metadata(config: TrainConfig, data: DataBundle, image_size: int) -> dict[str, str]:
    """What the weights need to be used later (docs/weights.md): kept in the export's
    safetensors header and in every checkpoint. The preprocessing is the data's own object
    (channels, ``image_size``, resize rule, interpolation, mean/std, class names), so that
    ``predict`` and ``eval`` prepare images exactly as validation did."""
    pre = data.preprocessing
    assert pre is not None and pre.input_size[1] == image_size, "load_dataset sets it"
    return {
        "model": config.model,
        "num_classes": str(data.num_classes),
        **pre.to_metadata(),
        "dataset": config.dataset,
    }


def _finish(run: _Run, stats: EvalStats | None) -> None:
    """``model.safetensors``, the curves and the confusion matrix (main process)."""
    from cnnzoo import plots

    config, data, model = run.config, run.data, run.model
    _save_weights(model, run.out / WEIGHTS, _metadata(config, data, run.image_size))
    title = f"{config.model} on {config.dataset}"
    plots.training_curves(run.history, run.out / "curves.png", title)
    if stats is None:  # no epoch ran in this call (resumed after the last, or stopped): evaluate
        stats = evaluate(
            model, make_loader(data.val, batch_size=256, shuffle=False, seed=0, epoch=0),
            data.num_classes, device=next(model.parameters()).device,
            dist=distributed.Dist(), amp=config.amp, channels_last=config.channels_last,
        )  # fmt: skip
    plots.confusion_matrix(stats.confusion, data.class_names, run.out / "confusion.png", title)


def step_seconds(config: TrainConfig, data: DataBundle, steps: int = 4) -> list[float]:
    """Seconds of each of ``steps`` training steps of ``config``'s model (built as a run builds
    it) on random images of the run's shape, through the training loop itself: what a time
    budget plans with. The first step includes warming caches up."""
    spec = get_spec(config.model)
    device = resolve_device(config.device)
    side = resolve_image_size(config, spec, _model_options(config, spec))
    generator = torch.Generator().manual_seed(config.seed)
    shape = (steps * config.batch_size, data.in_chans, side, side)
    images = torch.randn(shape, generator=generator)
    labels = torch.randint(data.num_classes, (shape[0],), generator=generator)
    built = create_model(
        config.model, num_classes=data.num_classes, in_chans=data.in_chans,
        **_model_options(config, spec),
    )  # fmt: skip
    model = _place(built, config, device)
    optimizer = build_optimizer(model, config.optimizer, lr=config.lr, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "constant", epochs=1, steps_per_epoch=steps)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=config.batch_size
    )
    times = [time.perf_counter()]

    def tick(images: int, loss: float) -> None:  # the loss is read every step: synchronised
        times.append(time.perf_counter())

    train_one_epoch(
        model, loader, optimizer, scheduler, epoch=1, device=device, dist=distributed.Dist(),
        amp=config.amp, channels_last=config.channels_last, on_step=tick,
    )  # fmt: skip
    return [b - a for a, b in itertools.pairwise(times)]
