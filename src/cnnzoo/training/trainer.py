"""A whole training run: resolve the options, build data, model and optimizer, run the epochs,
and leave everything in ``--out`` (config, metrics, checkpoints, weights, plots).

Exact resume: each epoch's data order and augmentations are seeded from (seed, epoch[, worker]),
and the checkpoint written at the end of an epoch holds the model, optimizer, scheduler and every
random generator's state. A resumed run therefore repeats the interrupted epoch exactly as the
uninterrupted run did (bitwise on CPU with ``--deterministic``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import cnnzoo
from cnnzoo.data import DataBundle, load_dataset, make_loader
from cnnzoo.errors import CheckpointError, InvalidArgumentError
from cnnzoo.fileio import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from cnnzoo.progress import Reporter
from cnnzoo.registry import create_model, get_spec
from cnnzoo.training import checkpoint, distributed
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import evaluate, train_one_epoch
from cnnzoo.training.optim import build_optimizer, build_scheduler

# Native image side of the built-in and standard datasets; an image folder has none.
NATIVE_SIZES = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32}
LAST, BEST, WEIGHTS = "last.pt", "best.pt", "model.safetensors"


@dataclass
class RunResult:
    """What a finished run reports: final metrics and where its files are."""

    out: Path
    history: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    main_process: bool = True  # False on the other ranks of a distributed run

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch (all devices); in deterministic mode also forbid the
    non-deterministic kernels, so that a CPU run repeats bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


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
    """The side images are resized to: ``--image-size`` if given (checked against the model),
    else the data's native side moved into the model's valid range (up to its minimum, or to
    its fixed size); an image folder without ``--image-size`` uses the model's default input."""
    low, high = spec.size_range(**options)
    if config.image_size is not None:
        spec.check_input(config.image_size, config.image_size, **options)
        return config.image_size
    native = NATIVE_SIZES.get(config.dataset)
    if native is None:
        return spec.input_size[1]
    if native < low:
        return spec.input_size[1] if high is not None else low
    if high is not None and native > high:
        return spec.input_size[1]
    return native


def _model_options(config: TrainConfig, spec: cnnzoo.ModelSpec) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.dropout is not None:
        if "dropout" not in spec.accepts():
            raise InvalidArgumentError(
                f"{spec.name} has no dropout layer to set: leave out --dropout."
            )
        options["dropout"] = config.dropout
    if "aux_logits" in spec.accepts():
        options["aux_logits"] = True  # GoogLeNet trains with its auxiliary classifiers
    return options


def _versions() -> dict[str, str]:
    import torchvision

    return {
        "cnnzoo": cnnzoo.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=metadata))


def fit(
    config: TrainConfig, argv: list[str] | None = None, reporter: Reporter | None = None
) -> RunResult:
    """Run the training that ``config`` describes; return the history and where files went.

    Raises:
        CnnzooError: a bad option, dataset, image size or checkpoint (one line each).
        TrainingDivergedError: the loss became NaN or infinite.
    """
    device = resolve_device(config.device)
    info = distributed.init(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    # Only rank 0 talks; the others train silently.
    reporter = reporter if reporter is not None and info.is_main else Reporter()
    try:
        return _fit(config, argv, reporter, device, info)
    finally:
        distributed.shutdown(info)


def _fit(config, argv, reporter, device, info) -> RunResult:
    log = reporter.log
    spec = get_spec(config.model)
    options = _model_options(config, spec)
    image_size = resolve_image_size(config, spec, options)
    out = Path(config.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):
            log(f"removed {stale.name}, left by a run killed while writing")
    if (out / LAST).exists() and not config.resume:
        raise CheckpointError(
            f"{out} already holds a run: add --resume to continue it, or choose another --out."
        )
    seed_everything(config.seed, config.deterministic)

    data = load_dataset(
        config.dataset,
        root=config.data_root,
        image_size=image_size,
        augment=config.augment,
        seed=config.seed,
        download=config.download,
    )
    notes = list(data.notes)
    if config.weights:
        from cnnzoo.weights import load_weights

        model, report = load_weights(
            config.model, config.weights, num_classes=data.num_classes, in_chans=data.in_chans,
            **options,
        )  # fmt: skip
        notes += [f"weights {config.weights}:", *("  " + line for line in report.lines())]
        pre = model.pretrained_cfg
        if pre.source == "assumed":
            notes.append("normalised with the training split's mean/std: the weights record none")
        else:
            data = data.with_normalization(
                pre.mean, pre.std, f"the weights were trained ({pre.source})"
            )
            notes.append(data.notes[-1])
    else:
        model = create_model(
            config.model, num_classes=data.num_classes, in_chans=data.in_chans, **options
        )
    frozen = model.freeze(config.freeze)
    if frozen:
        notes.append(f"frozen (no gradients, BatchNorm statistics fixed): {', '.join(frozen)}")
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    if config.batch_size % info.world_size:
        raise InvalidArgumentError(
            f"--batch-size {config.batch_size} is the global batch and must divide evenly over "
            f"{info.world_size} processes."
        )
    per_rank_batch = config.batch_size // info.world_size
    train_sampler = None
    if info.enabled:
        train_sampler = torch.utils.data.DistributedSampler(
            data.train, info.world_size, info.rank, shuffle=True, seed=config.seed
        )
    # Disjoint, unpadded validation shards: every image is evaluated exactly once.
    val_set = data.val
    if info.enabled:
        val_set = torch.utils.data.Subset(
            data.val, range(info.rank, len(data.val), info.world_size)
        )
    val_loader = make_loader(
        val_set, batch_size=256, shuffle=False, seed=config.seed, epoch=0,
        num_workers=config.num_workers,
    )  # fmt: skip
    steps_per_epoch = -(-len(train_sampler or data.train) // per_rank_batch)

    optimizer = build_optimizer(
        model, config.optimizer, lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay, head_lr=config.head_lr,
    )  # fmt: skip
    scheduler = build_scheduler(
        optimizer, config.schedule, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
    )  # fmt: skip

    history: list[dict[str, Any]] = []
    start_epoch, best_acc = 1, -1.0
    if config.resume:
        state = checkpoint.load(out / LAST)
        if state.get("model_name") != config.model:
            raise CheckpointError(
                f"{out / LAST} is a checkpoint of {state.get('model_name')!r}, not "
                f"{config.model!r}: resume with --model {state.get('model_name')} or another --out."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start_epoch, best_acc = state["epoch"] + 1, state["best_acc"]
        checkpoint.set_rng_state(state["rng"])
        log(f"resumed from {out / LAST} after epoch {state['epoch']}")

    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)

    resolved = config.to_dict() | {
        "image_size": image_size,
        "in_chans": data.in_chans,
        "warmup": config.warmup_epochs,
    }
    if info.is_main:
        atomic_write_text(
            out / "config.json",
            json.dumps(
                {
                    "config": resolved,
                    "model_options": options,
                    "dataset": {"classes": data.class_names, "mean": data.mean, "std": data.std},
                    "world_size": info.world_size,
                    "versions": _versions(),
                    "command": argv if argv is not None else sys.argv,
                    "notes": notes,
                },
                indent=2,
            ),
        )
    for note in notes:
        log(note)
    log(
        f"training {config.model} ({sum(p.numel() for p in model.parameters()):,} params) on "
        f"{config.dataset} at {data.in_chans}×{image_size}×{image_size}, {len(data.train):,} "
        f"train / {len(data.val):,} val images, {config.epochs} epochs, {device.type}"
        + (f", {info.world_size} processes" if info.enabled else "")
    )

    stats = None
    for epoch in range(start_epoch, config.epochs + 1):
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        train_loader = make_loader(
            data.train, batch_size=per_rank_batch, shuffle=train_sampler is None,
            seed=config.seed, epoch=epoch, num_workers=config.num_workers,
            sampler=train_sampler,
        )  # fmt: skip
        lr = optimizer.param_groups[0]["lr"]
        reporter.start_epoch(epoch, config.epochs, len(train_loader))
        train = train_one_epoch(
            net, train_loader, optimizer, scheduler, epoch=epoch, device=device, dist=info,
            label_smoothing=config.label_smoothing, aux_weight=config.aux_weight,
            amp=config.amp, channels_last=config.channels_last, on_step=reporter.step,
        )  # fmt: skip
        reporter.end_epoch()
        stats = evaluate(
            model, val_loader, data.num_classes, device=device, dist=info,
            channels_last=config.channels_last,
        )  # fmt: skip
        row = {
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
        history.append(row)
        improved = stats.acc > best_acc
        best_acc = max(best_acc, stats.acc)
        if info.is_main:
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            state = {
                "model_name": config.model,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_acc": best_acc,
                "history": history,
                "config": resolved,
                "metadata": _metadata(config, data, image_size),
                "rng": checkpoint.rng_state(),
                "versions": _versions(),
            }
            checkpoint.save(out / LAST, state, epoch)
            if improved:  # the same bytes: linked, not written again (VGG: 1.5 GB an epoch)
                atomic_copy(out / LAST, out / BEST)
        distributed.barrier(info)
        top5 = f" top-5 {100 * stats.top5:.2f}%" if stats.top5 is not None else ""
        log(
            f"epoch {epoch}/{config.epochs}: train loss {train.loss:.4f} acc "
            f"{100 * train.acc:.2f}% | val loss {stats.loss:.4f} acc {100 * stats.acc:.2f}%"
            f"{top5} | {row['images_per_s']:.0f} img/s"
        )

    if info.is_main:
        _finish(out, config, model, data, image_size, history, stats)
    return RunResult(out, history, notes, info.is_main)


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


def _finish(out, config, model, data, image_size, history, stats) -> None:
    from cnnzoo import plots

    _save_weights(model, out / WEIGHTS, _metadata(config, data, image_size))
    title = f"{config.model} on {config.dataset}"
    plots.training_curves(history, out / "curves.png", title)
    if stats is None:  # resumed after the last epoch: evaluate once for the matrix
        stats = evaluate(
            model, make_loader(data.val, batch_size=256, shuffle=False, seed=0, epoch=0),
            data.num_classes, device=next(model.parameters()).device,
            dist=distributed.Dist(),
        )  # fmt: skip
    plots.confusion_matrix(stats.confusion, data.class_names, out / "confusion.png", title)
