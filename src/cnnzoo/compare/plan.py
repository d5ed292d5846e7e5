"""What a comparison runs: the models, the side each trains at, the budget, the seeds, and where.

:class:`CompareConfig` holds what the user asked for (``None`` where a preset decides);
:func:`make_plan` checks all of it before anything trains and fills in the defaults, so that a
bad option fails in one line at once rather than after an hour of training.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnnzoo.checks import check_choice, check_int, check_number, is_int
from cnnzoo.choices import PRECISIONS
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.training.config import training_options

# The classic line-up, in paper order: the default list.
DEFAULT_MODELS = (
    "lenet5", "alexnet", "vgg11_bn", "googlenet", "resnet18", "densenet121", "mobilenet_v2",
    "efficientnet_b0",
)  # fmt: skip
# A one-minute look: no convolution, the first CNN, a small and a large residual net (the
# mobile nets need more than 2 epochs to leave chance on digits).
QUICK_MODELS = ("mlp", "lenet5", "resnet20", "resnet18")
# He et al. 2015, section 4.2: plain and residual nets of 20 and 56 layers.
DEGRADATION_MODELS = ("plain20", "plain56", "resnet20", "resnet56")

# The side every model trains at unless it cannot: the ImageNet networks divide their input by
# 32, so 32 pixels is the smallest side that leaves them a 1×1 final map (digits are 8×8 and
# gain nothing from more); models that need more (AlexNet: 63) get their minimum.
DEFAULT_SIDE, QUICK_SIDE, DEGRADATION_SIDE = 32, 16, 16
# 4 epochs keep the default line-up under 10 minutes on 2 CPU cores: measured 9 min 5 s on a
# quiet machine (5.5 of training, VGG-11-BN 37% of it; 2.9 of timing, 0.5 of memory probes);
# 5 epochs took 15.7 minutes with older, slower code (docs/compare.md).
DEFAULT_EPOCHS, QUICK_EPOCHS, DEGRADATION_EPOCHS = 4, 2, 12
# Twice the trainer's 16: half the optimizer steps, a large part of VGG's and AlexNet's time on
# a CPU (AdamW updating their 100M+ parameters of fully connected layers).
BATCH_SIZE = 32
# AdamW's rate: the trainer's 2e-3, except for AlexNet and the VGGs, whose fully connected
# layers (100M+ parameters, no BatchNorm) stay at chance on digits at 2e-3 and learn at 5e-4;
# the BatchNorm networks learn much more slowly at 5e-4 (MobileNetV2: 40% after 5 epochs
# against 88% at 2e-3). Measured while choosing these defaults (docs/compare.md).
LR = 2e-3
LR_BY_FAMILY = {"alexnet": 5e-4, "vgg": 5e-4}
# A run of a model with more parameters than this (the published count, default head) writes
# no checkpoint at epochs' ends, only its final weights (and a signal's checkpoint): weights and
# AdamW's two moments are 12 bytes a parameter, and VGG-11-BN's 1.5 GB took 2.6-11 s to write and
# fsync here, four times a run, for a resume that would save at most its 4 epochs. AlexNet and
# the VGGs are above it; ResNet-18 (11.7M, 140 MB) and the smaller ones keep resuming by epoch.
EPOCH_CHECKPOINT_MAX_PARAMS = 25_000_000
# The families that train faster with weights and images channels_last on a CPU (oneDNN's
# depthwise, concatenating and many-branch convolutions prefer it). One fp32 training step,
# batch 32 at their side, 2 threads, channels_last against contiguous (2026-12-02, quiet):
# EfficientNet-B0 1.99×, MobileNetV2 1.66×, GoogLeNet 1.16×, DenseNet-121 1.15×; the others
# were as fast or slower (AlexNet 1.04×, VGG-11-BN 0.88×, ResNet-18 0.89×). The same
# arithmetic in another order of additions (a run still learning ends elsewhere: the mobile
# nets' seed noise, docs/compare.md); not with --amp, whose layouts were not measured at these
# shapes (bf16 made no model's step faster here: docs/benchmarks.md).
CHANNELS_LAST_FAMILIES = ("efficientnet", "mobilenet", "densenet", "googlenet")
BENCH_BATCHES = (1, 32)
BENCH_ROUNDS, QUICK_BENCH_ROUNDS = 10, 5
MAX_BUDGET_EPOCHS = 100  # a budget run plans at most this many epochs
# optimize's backends but int8, which needs calibration images and changes the outputs.
BENCH_BACKENDS = (
    "auto", "eager", "channels_last", "fused", "fused_channels_last", "onnxruntime", "openvino",
    "compile", "cuda",
)  # fmt: skip
REFERENCES = ("imagenet",)
EXPERIMENTS = ("degradation",)


@dataclass
class CompareConfig:
    """Everything ``cnnzoo compare`` takes; ``None`` leaves the choice to the preset.

    Attributes:
        models: registry names; ``None``: :data:`DEFAULT_MODELS` (:data:`QUICK_MODELS` with
            ``quick``, :data:`DEGRADATION_MODELS` for the experiment).
        dataset: as for ``cnnzoo train`` (``digits``, ``mnist``, ``imagefolder:PATH``, ...).
        data_root: folder holding the dataset files.
        out: the comparison's folder; each run goes to ``out/runs/<model>/``.
        image_size: one side for every model (each must accept it); ``None``: per model.
        epochs: epochs per run; ``None``: the preset's, unless ``budget_seconds`` is given.
        budget_seconds: training seconds per run instead of a number of epochs.
        seeds: one run per model and seed; more than one gives mean ± standard deviation.
        batch_size: training batch size.
        lr: AdamW learning rate of every run; ``None``: per model, :data:`LR` or its
            family's in :data:`LR_BY_FAMILY`.
        quick: the one-minute preset (fewer, cheaper models, 16-pixel sides, 2 epochs, fewer
            timed calls, no memory probe).
        reference: ``"imagenet"`` adds the chart of the published ImageNet figures.
        experiment: ``"degradation"`` runs He et al.'s plain-vs-residual experiment instead.
        backend: inference backend timed (``optimize``'s names); ``"auto"`` measures the fp32
            candidates for each model and batch size and keeps the fastest.
        precision: the arithmetic timed (``optimize``'s ``precision``): fp32, or bf16/int8
            when the user asks (their change against fp32 is measured on the training images).
        bench_rounds: timed calls per benchmark row; ``None``: 10 (5 with ``quick``).
        memory: measure peak memory in a child process per model; ``None``: on unless quick.
        threads: intra-op threads for the benchmark; torch's default when ``None``.
        device: training device, as for ``cnnzoo train``.
        amp: train in bfloat16 autocast (``cnnzoo train --amp``). Off by default: at the
            comparison's shapes (batch 32, 32 px) it was no faster than fp32 on an AMX CPU.
        cache_dir: where ``optimize(..., "auto")`` keeps its choices (its default if ``None``).
        command: the command line, for the report.
    """

    models: Sequence[str] | None = None
    dataset: str = "digits"
    data_root: str | None = None
    out: str = "runs/compare"
    image_size: int | None = None
    epochs: int | None = None
    budget_seconds: float | None = None
    seeds: Sequence[int] = (0,)
    batch_size: int = BATCH_SIZE
    lr: float | None = None
    quick: bool = False
    reference: str | None = None
    experiment: str | None = None
    backend: str = "auto"
    bench_rounds: int | None = None
    memory: bool | None = None
    threads: int | None = None
    device: str = "auto"
    cache_dir: str | None = None
    command: list[str] | None = None
    precision: str = "fp32"
    amp: bool = False


@dataclass
class Plan:
    """A checked :class:`CompareConfig` with every default filled in."""

    models: list[str]
    sizes: dict[str, int]
    size_rule: str
    epochs: int | None
    budget_seconds: float | None
    seeds: list[int]
    batch_size: int
    lrs: dict[str, float]
    lr_rule: str
    out: Path
    dataset: str
    data_root: str | None
    reference: str | None
    experiment: str | None
    backend: str
    bench_rounds: int
    memory: bool
    threads: int | None
    device: str
    cache_dir: str | None
    quick: bool
    command: list[str] = field(default_factory=list)
    precision: str = "fp32"
    amp: bool = False

    def run_dir(self, model: str, seed: int) -> Path:
        """``out/runs/<model>/`` (``.../seed<k>/`` under it when there are several seeds)."""
        base = self.out / "runs" / model
        return base if len(self.seeds) == 1 else base / f"seed{seed}"

    def channels_last(self, model: str) -> bool:
        """Whether ``model`` trains channels_last (:data:`CHANNELS_LAST_FAMILIES`)."""
        from cnnzoo.models import get_spec

        return not self.amp and get_spec(model).family in CHANNELS_LAST_FAMILIES

    def settings(self) -> dict:
        """The defaults as used, for results.json and the report."""
        return {
            "models": self.models,
            "dataset": self.dataset,
            "image_sizes": self.sizes,
            "image_size_rule": self.size_rule,
            "epochs": self.epochs,
            "budget_seconds": self.budget_seconds,
            "seeds": self.seeds,
            "batch_size": self.batch_size,
            "lr": self.lrs,
            "lr_rule": self.lr_rule,
            "recipe": "AdamW at each model's lr; the trainer's defaults otherwise: weight decay "
            "5e-4 (none on norm layers and biases), cosine schedule after a 1-epoch warm-up, "
            "light augmentation (docs/training.md)",
            "bench_backend": self.backend,
            "train_precision": "bf16 autocast (--amp)" if self.amp else "fp32",
            "train_channels_last": [m for m in self.models if self.channels_last(m)],
            "bench_precision": self.precision,
            "bench_batches": list(BENCH_BATCHES),
            "bench_rounds": self.bench_rounds,
            "memory": self.memory,
            "threads": self.threads,
            "quick": self.quick,
            "reference": self.reference,
            "experiment": self.experiment,
        }


def make_plan(config: CompareConfig) -> Plan:
    """Check ``config`` and fill in the defaults.

    Raises:
        UnknownModelError: a model name that is not registered.
        InvalidArgumentError: any other bad option (one line naming it and the fix).
        InputSizeError: ``image_size`` that a listed model cannot take.
    """
    # The registry imports torch: here, not at the top, so that building the command line's
    # parser (which reads this module's presets) stays light.
    from cnnzoo.models import get_spec

    experiment = _choice("--experiment", config.experiment, EXPERIMENTS)
    reference = _choice("--reference", config.reference, REFERENCES)
    if experiment and reference:
        raise InvalidArgumentError(
            "--reference draws the accuracy chart, which the degradation experiment does not "
            "make: leave out one of --reference and --experiment."
        )
    if experiment and config.models is not None:
        raise InvalidArgumentError(
            f"--experiment {experiment} trains {', '.join(DEGRADATION_MODELS)}: leave out --models."
        )
    if config.epochs is not None and config.budget_seconds is not None:
        raise InvalidArgumentError(
            "--epochs and --budget-seconds are two ways to set the budget: give one of them."
        )
    models = _models(config, experiment)
    backend = _choice("--backend", config.backend, BENCH_BACKENDS)
    precision = _choice("--precision", config.precision, PRECISIONS)
    seeds = _check_numbers(config)
    lr = config.lr
    if experiment:
        side, default_epochs = DEGRADATION_SIDE, DEGRADATION_EPOCHS
    elif config.quick:
        side, default_epochs = QUICK_SIDE, QUICK_EPOCHS
    else:
        side, default_epochs = DEFAULT_SIDE, DEFAULT_EPOCHS
    sizes, rule = _sizes(config, models, side)
    epochs = None if config.budget_seconds is not None else (config.epochs or default_epochs)
    return Plan(
        models=models,
        sizes=sizes,
        size_rule=rule,
        epochs=epochs,
        budget_seconds=None if config.budget_seconds is None else float(config.budget_seconds),
        seeds=seeds,
        batch_size=config.batch_size,
        lr_rule=(
            f"--lr {lr:g} for every model"
            if lr is not None
            else f"{LR:g} (the trainer's), {LR_BY_FAMILY['alexnet']:g} for AlexNet and the VGGs, "
            "whose dense layers do not learn at 2e-3 on digits"
        ),
        lrs={
            m: float(lr) if lr is not None else LR_BY_FAMILY.get(get_spec(m).family, LR)
            for m in models
        },
        out=_writable(config.out),
        dataset=config.dataset,
        data_root=config.data_root,
        reference=reference,
        experiment=experiment,
        backend=backend or "auto",
        bench_rounds=config.bench_rounds or (QUICK_BENCH_ROUNDS if config.quick else BENCH_ROUNDS),
        memory=(not config.quick) if config.memory is None else bool(config.memory),
        threads=config.threads,
        device=config.device,
        cache_dir=config.cache_dir,
        quick=config.quick,
        command=list(config.command or []),
        precision=precision or "fp32",
        amp=bool(config.amp),
    )


def _check_numbers(config: CompareConfig) -> list[int]:
    """Check the budget, batch size, rate, rounds, threads and seeds; return the seeds."""
    if config.epochs is not None:
        check_int("--epochs", config.epochs)
    if config.budget_seconds is not None:
        check_number("--budget-seconds", config.budget_seconds, low=0, above=True)
    check_int("--batch-size", config.batch_size)
    if config.lr is not None:
        check_number("--lr", config.lr, low=0, above=True)
    if config.bench_rounds is not None:
        check_int("--rounds", config.bench_rounds)
    if config.threads is not None:
        check_int("--threads", config.threads)
    seeds = list(config.seeds)
    if not seeds or not all(is_int(s) and s >= 0 for s in seeds):
        raise InvalidArgumentError(
            f"--seeds must be whole numbers ≥ 0, e.g. 0,1,2; got {config.seeds!r}."
        )
    if len(set(seeds)) != len(seeds):
        raise InvalidArgumentError(
            f"--seeds lists a seed twice ({config.seeds!r}): list each once."
        )
    return seeds


def _sizes(config: CompareConfig, models: list[str], side: int) -> tuple[dict[str, int], str]:
    """Each model's side (``--image-size`` if every model takes it, else ``side`` moved into
    each model's range) and the rule in words."""
    from cnnzoo.models import get_spec

    sizes: dict[str, int] = {}
    for name in models:
        spec = get_spec(name)
        if config.image_size is not None:
            check_int("--image-size", config.image_size)
            low, high = spec.size_range(**training_options(spec))
            if config.image_size < low or (high is not None and config.image_size > high):
                valid = f"{low}+" if high is None else f"{low}-{high}"
                raise InputSizeError(
                    f"--image-size {config.image_size}: {name} takes {valid} pixels a side; leave "
                    f"--image-size out to give each model a side it takes, or leave {name} out."
                )
            sizes[name] = config.image_size
        else:
            sizes[name] = spec.fit_side(side, **training_options(spec))
    if config.image_size is not None:
        return sizes, f"--image-size {config.image_size} for every model"
    return sizes, (
        f"{side}×{side} for every model that takes it; a model outside its valid range gets "
        "its minimum side, or its default side when its classifier reads a fixed-size map "
        "(the trainer's rule, ModelSpec.fit_side)"
    )


def _models(config: CompareConfig, experiment: str | None) -> list[str]:
    from cnnzoo.models import get_spec

    if experiment:
        return list(DEGRADATION_MODELS)
    if config.models is None:
        return list(QUICK_MODELS if config.quick else DEFAULT_MODELS)
    models = [m.strip() for m in config.models]
    if not models or not all(models):
        raise InvalidArgumentError(
            "--models must name at least one model, comma-separated, e.g. lenet5,resnet18."
        )
    for name in models:
        get_spec(name)  # an unknown name fails here, with close matches
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise InvalidArgumentError(f"--models lists {twice[0]} twice: list each model once.")
    return models


def _choice(flag: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is None or value in choices:
        return value
    return check_choice(flag, value, choices)


def _writable(out: str | Path) -> Path:
    """The output folder, created if needed and checked by writing a file in it."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvalidArgumentError(
            f"--out {path} cannot be written ({reason}): choose a folder you can write to."
        ) from None
    return path
