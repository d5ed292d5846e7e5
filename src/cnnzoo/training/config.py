"""The training configuration: one dataclass, every option with its default and its check."""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cnnzoo.errors import InvalidArgumentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

AUGMENTS = ("none", "light", "standard")
DEVICES = ("auto", "cpu", "cuda", "mps")


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
    deterministic: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    out: str = "runs/latest"
    resume: bool = False
    num_workers: int = 0
    quiet: bool = False
    aux_weight: float = 0.3
    weights: str | None = None
    freeze: str = "none"
    head_lr: float | None = None

    def __post_init__(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise InvalidArgumentError(
                f"--num-workers must be 0 or more, got {self.num_workers!r}."
            )
        for name in ("lr", "momentum", "weight_decay", "warmup", "label_smoothing", "aux_weight"):
            value = getattr(self, name)
            if value is None and name == "warmup":
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                flag = "--" + name.replace("_", "-")
                raise InvalidArgumentError(f"{flag} must be a number ≥ 0, got {value!r}.")
        if self.lr == 0:
            raise InvalidArgumentError("--lr must be greater than 0.")
        if self.label_smoothing >= 1:
            raise InvalidArgumentError("--label-smoothing must be below 1 (0.1 is usual).")
        if self.image_size is not None:
            _positive_int("image_size", self.image_size)
        if self.head_lr is not None and not (math.isfinite(self.head_lr) and self.head_lr > 0):
            raise InvalidArgumentError(f"--head-lr must be greater than 0, got {self.head_lr!r}.")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise InvalidArgumentError(f"--dropout must be in [0, 1), got {self.dropout!r}.")
        from cnnzoo.training.optim import OPTIMIZERS, SCHEDULES

        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment", self.augment, AUGMENTS)
        _choice("device", self.device, DEVICES)

    @property
    def warmup_epochs(self) -> float:
        """``--warmup``, or the default: one epoch, a quarter of the run when it is shorter than
        four epochs, none with onecycle (which warms up by itself)."""
        if self.warmup is not None:
            return self.warmup
        return 0.0 if self.schedule == "onecycle" else min(1.0, self.epochs / 4)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        flag = "--" + name.replace("_", "-")
        raise InvalidArgumentError(f"{flag} must be a positive integer, got {value!r}.")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InvalidArgumentError(f"--{name} {value!r} is not one of {', '.join(choices)}{hint}.")


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
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InvalidArgumentError(f"config file {path}: unknown option {key!r}{hint}.")
        options[name] = value
    return options
