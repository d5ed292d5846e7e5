"""The training configuration: one dataclass, every option with its default and its check."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnzoo.checks import check_choice, check_number, did_you_mean
from cnnzoo.choices import AUGMENTS, DEVICES, OPTIMIZERS, SCHEDULES
from cnnzoo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from cnnzoo.models import ModelSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Option:
    """How one option of :class:`TrainConfig` is checked.

    Attributes:
        kind: ``"int"``, ``"number"`` (int or float, finite), ``"bool"`` (or one of
            ``choices``: ``--resume auto``), ``"text"`` or ``"choice"`` (one of ``choices``).
        low: the smallest value allowed (``None``: no bound).
        above: ``low`` itself is not allowed (``lr > 0``).
        below: values must be smaller than this (``label_smoothing < 1``).
        optional: ``None`` is allowed (and means "the default rule").
        choices: the names a ``"choice"`` takes.
    """

    kind: str
    low: float | None = None
    above: bool = False
    below: float | None = None
    optional: bool = False
    choices: tuple[str, ...] = ()


@dataclass
class TrainConfig:
    """Every option of ``cnnzoo train``.

    The defaults are a recipe for the default job, LeNet-5 on the built-in digits: AdamW with a
    cosine schedule after one warm-up epoch, small batches (1,437 training images), light
    augmentation; it reaches 99% validation accuracy (median of 3 seeds) in under half a minute
    on two CPU cores (docs/benchmarks.md). Larger data and models want their own settings.
    """

    model: str = "lenet5"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup: float | None = None  # None: 1 epoch (a quarter of runs under 4 epochs; 0 with onecycle)
    label_smoothing: float = 0.0
    augment: str = "light"
    dropout: float | None = None
    image_size: int | None = None
    seed: int = 0
    val_fraction: float | None = None  # None: 20 % (image folders of class folders only)
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    out: str = "runs/latest"
    resume: bool | str = False  # True: must resume; "auto": resume if --out holds a run
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    # False: no last.pt/best.pt at epochs' ends (a signal's checkpoint and the weights only)
    epoch_checkpoints: bool = True
    num_workers: int = 0
    quiet: bool = False
    aux_weight: float = 0.3
    weights: str | None = None
    freeze: str = "none"
    head_lr: float | None = None

    def __post_init__(self) -> None:
        for name, option in OPTIONS.items():
            check_option(name, getattr(self, name), option)

    @property
    def warmup_epochs(self) -> float:
        """``--warmup``, or the default: one epoch, a quarter of the run when it is shorter than
        four epochs, none with onecycle (which warms up by itself)."""
        if self.warmup is not None:
            return self.warmup
        return 0.0 if self.schedule == "onecycle" else min(1.0, self.epochs / 4)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Every option of TrainConfig and its check: one table, so that a value from a config file
# (where TOML gives strings, booleans and numbers alike) is checked as a flag's would be.
OPTIONS: dict[str, Option] = {
    "model": Option("text"),
    "dataset": Option("text"),
    "data_root": Option("text", optional=True),
    "download": Option("bool"),
    "epochs": Option("int", low=1),
    "batch_size": Option("int", low=1),
    "optimizer": Option("choice", choices=OPTIMIZERS),
    "lr": Option("number", low=0, above=True),
    "momentum": Option("number", low=0),
    "weight_decay": Option("number", low=0),
    "schedule": Option("choice", choices=SCHEDULES),
    "warmup": Option("number", low=0, optional=True),
    "label_smoothing": Option("number", low=0, below=1),
    "augment": Option("choice", choices=AUGMENTS),
    "dropout": Option("number", low=0, below=1, optional=True),
    "image_size": Option("int", low=1, optional=True),
    "seed": Option("int", low=0),
    "val_fraction": Option("number", low=0, above=True, below=1, optional=True),
    "deterministic": Option("bool"),
    "device": Option("choice", choices=DEVICES),
    "amp": Option("bool"),
    "channels_last": Option("bool"),
    "compile": Option("bool"),
    "out": Option("text"),
    "resume": Option("bool", choices=("auto",)),
    "checkpoint_every": Option("int", low=0),
    "epoch_checkpoints": Option("bool"),
    "num_workers": Option("int", low=0),
    "quiet": Option("bool"),
    "aux_weight": Option("number", low=0),
    "weights": Option("text", optional=True),
    "freeze": Option("text"),
    "head_lr": Option("number", low=0, above=True, optional=True),
}


def check_option(name: str, value: object, option: Option) -> None:
    """Raise :class:`InvalidArgumentError` naming ``--name`` and what it takes unless ``value``
    is what ``option`` allows."""
    flag = "--" + name.replace("_", "-")
    if value is None and option.optional:
        return
    if option.kind == "choice":
        check_choice(flag, value, option.choices)
    elif option.kind == "bool":
        if option.choices and not isinstance(value, bool) and value not in option.choices:
            words = " or ".join(option.choices)
            raise InvalidArgumentError(
                f"{flag} takes no value or {words}, got {value!r} (in a config file: true, "
                f'false or "{words}").'
            )
        if not isinstance(value, bool) and value not in option.choices:
            key = name.replace("_", "-")
            raise InvalidArgumentError(
                f"{flag} must be true or false, got {value!r} (in a config file: {key} = true, "
                "without quotes)."
            )
    elif option.kind == "text":
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{flag} must be a string, got {value!r}.")
    else:
        integer = option.kind == "int"
        check_number(
            flag, value, integer=integer, low=option.low, above=option.above, below=option.below
        )


def training_options(spec: ModelSpec) -> dict[str, Any]:
    """The model options every training run builds with: GoogLeNet trains with its auxiliary
    classifiers (loss = main + 0.3 · aux, as in the paper). They can narrow the valid sizes."""
    return {"aux_logits": True} if "aux_logits" in spec.accepts() else {}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, with the command line's names (``batch-size`` or
    ``batch_size``). Unknown keys are an error, so that a typo is never silently ignored."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"config file {path} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgumentError(f"config file {path} is not valid TOML: {err}.") from None
    known = {f.name for f in fields(TrainConfig)}
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            hint = did_you_mean(name.replace("_", "-"), [k.replace("_", "-") for k in known])
            raise InvalidArgumentError(f"config file {path}: unknown option {key!r}{hint}.")
        options[name] = value
    return options
