"""One training run per model and seed, through the trainer, reused or resumed when it exists.

Each run is ``out/runs/<model>/`` (``.../seed<k>/`` with several seeds), written by
:func:`cnnzoo.training.trainer.fit`. A run whose ``model.safetensors`` exists and whose
``metrics.jsonl`` has every epoch of its ``config.json`` is finished and is not touched again; a
run with a checkpoint continues with ``resume=True`` (the trainer's exact resume); anything else
starts afresh. A run made with other settings (image size, seed, budget...) is refused rather
than mixed in.

A time budget (``budget_seconds``) plans the epochs from a short timing of a few training steps
(the trainer's own, :func:`cnnzoo.training.trainer.step_seconds`), so that the learning-rate
schedule runs to its end within the budget, and stops after the epoch whose training time
crosses the budget in case the estimate was short: the run's reporter answers the trainer's
``should_stop`` before each epoch, and the trainer ends the run there, writing the weights, plots
and confusion matrix as for a finished run. ``compare.json`` then records the stop, so that the
run counts as finished. One ``fit`` per run; the comparison has no training step of its own.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnzoo.compare.plan import EPOCH_CHECKPOINT_MAX_PARAMS, MAX_BUDGET_EPOCHS, Plan
from cnnzoo.compare.reporter import CompareReporter
from cnnzoo.data import DataBundle
from cnnzoo.errors import CheckpointError, Interrupted
from cnnzoo.fileio import atomic_write_text
from cnnzoo.models import get_spec
from cnnzoo.progress import Reporter
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.trainer import fit, step_seconds

MARKER = "compare.json"  # the comparison's own record beside the trainer's files
CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "last.pt"
WEIGHTS = "model.safetensors"
# Fields of the trainer's config.json that must agree for a run to be reused.
MUST_MATCH = ("model", "dataset", "image_size", "seed", "batch_size", "lr")


@dataclass
class RunRecord:
    """One finished run.

    Attributes:
        model, seed: what was trained.
        out: the run's folder.
        image_size: the side it trained at.
        history: ``metrics.jsonl`` (one dict per epoch, as the trainer wrote it).
        planned_epochs: the epochs its schedule was planned over.
        status: ``"trained"``, ``"resumed"`` or ``"reused"`` (finished before this call).
        stopped_by_budget: the budget ended it before ``planned_epochs``.
    """

    model: str
    seed: int
    out: Path
    image_size: int
    history: list[dict[str, Any]]
    planned_epochs: int
    status: str
    stopped_by_budget: bool = False

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def top1(self) -> float:
        """Final validation top-1 in percent (the weights in ``model.safetensors``)."""
        return 100 * self.history[-1]["val_acc"]

    @property
    def top5(self) -> float | None:
        top5 = self.history[-1].get("val_top5")
        return None if top5 is None else 100 * top5

    @property
    def train_seconds(self) -> float:
        """Training time as the trainer measured it (the epochs' training passes, without
        validation and checkpoints)."""
        return sum(h["seconds"] for h in self.history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "seed": self.seed,
            "out": str(self.out),
            "image_size": self.image_size,
            "epochs": self.epochs,
            "planned_epochs": self.planned_epochs,
            "status": self.status,
            "stopped_by_budget": self.stopped_by_budget,
            "top1_pct": self.top1,
            "top5_pct": self.top5,
            "train_seconds": self.train_seconds,
        }


class _RunReporter(Reporter):
    """Passes the trainer's calls on, and stops the run once its training time (the epochs'
    ``seconds``, a resumed run's earlier epochs included) reaches the budget."""

    def __init__(self, outer: CompareReporter, budget: float | None) -> None:
        self.outer, self.budget = outer, budget

    def log(self, text: str) -> None:
        self.outer.log(text)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.outer.start_epoch(epoch, epochs, steps)

    def step(self, images: int, loss: float) -> None:
        self.outer.step(images, loss)

    def end_epoch(self) -> None:
        self.outer.end_epoch()

    def should_stop(self, history: list[dict]) -> bool:
        return self.budget is not None and sum(h["seconds"] for h in history) >= self.budget


def read_history(folder: Path) -> list[dict[str, Any]]:
    path = folder / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_finished(folder: Path) -> bool:
    """Whether the trainer finished the run in ``folder``: weights written, and every epoch of
    its config in the metrics or the budget's stop recorded in ``compare.json``."""
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        return False
    epochs = json.loads((folder / CONFIG).read_text())["config"]["epochs"]
    marker = folder / MARKER
    stopped = marker.is_file() and json.loads(marker.read_text()).get("stopped_by_budget")
    return bool(stopped) or len(read_history(folder)) == epochs


def train_run(
    plan: Plan, model: str, seed: int, reporter: CompareReporter, data: DataBundle
) -> RunRecord:
    """Train (or reuse, or resume) the run of ``model`` with ``seed``.

    Args:
        plan: the comparison's settings.
        model: registry name.
        seed: the run's seed.
        reporter: gets the trainer's progress calls.
        data: the dataset at its native size (its classes, channels and training images plan
            a time budget's epochs).

    Raises:
        CheckpointError: the folder holds a run made with other settings.
        CnnzooError: whatever the trainer raises (bad data, divergence...).
    """
    out = plan.run_dir(model, seed)
    size = plan.sizes[model]
    marker = _check_existing(plan, model, seed, out)
    config = TrainConfig(
        model=model,
        dataset=plan.dataset,
        data_root=plan.data_root,
        epochs=1,
        batch_size=plan.batch_size,
        lr=plan.lrs[model],
        image_size=size,
        seed=seed,
        device=plan.device,
        amp=plan.amp,
        channels_last=plan.channels_last(model),
        epoch_checkpoints=get_spec(model).params <= EPOCH_CHECKPOINT_MAX_PARAMS,
        out=str(out),
        quiet=True,
    )
    if is_finished(out):
        # A finished run has weights, and _check_existing refused weights without a marker.
        assert marker is not None
        history = read_history(out)
        return RunRecord(
            model, seed, out, size, history, marker["planned_epochs"], "reused",
            stopped_by_budget=len(history) < marker["planned_epochs"],
        )  # fmt: skip
    if marker is None:
        planned = plan.epochs or _budget_epochs(config, plan.budget_seconds, data)
        marker = {
            "epochs": plan.epochs,
            "budget_seconds": plan.budget_seconds,
            "planned_epochs": planned,
        }
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MARKER, json.dumps(marker, indent=1) + "\n")
    planned = marker["planned_epochs"]
    resume = (out / CHECKPOINT).is_file()
    config = replace(config, epochs=planned, resume=resume)
    result = fit(
        config, argv=_train_command(config), reporter=_RunReporter(reporter, plan.budget_seconds)
    )
    if result.interrupted is not None:  # a signal: the comparison stops too (a rerun resumes)
        raise Interrupted(
            f"{model} (seed {seed}) stopped by {result.interrupted}, its checkpoint in {out}: "
            "run the same command again to resume."
        )
    if result.stopped:  # the budget ended it before the planned epochs: finished as it is
        marker["stopped_by_budget"] = True
        atomic_write_text(out / MARKER, json.dumps(marker, indent=1) + "\n")
    return RunRecord(
        model, seed, out, size, result.history, planned, "resumed" if resume else "trained",
        stopped_by_budget=result.stopped,
    )  # fmt: skip


def _train_command(config: TrainConfig) -> list[str]:
    """The ``cnnzoo train`` command that makes the same run (for config.json and the report)."""
    command = [
        "cnnzoo", "train", "--model", config.model, "--dataset", config.dataset,
        "--image-size", str(config.image_size), "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size), "--lr", f"{config.lr:g}", "--seed",
        str(config.seed), "--out", config.out,
    ]  # fmt: skip
    if config.data_root:
        command += ["--data-root", config.data_root]
    if config.amp:
        command.append("--amp")
    if not config.epoch_checkpoints:
        command.append("--no-epoch-checkpoints")
    return command


def _check_existing(plan: Plan, model: str, seed: int, out: Path) -> dict[str, Any] | None:
    """The run's marker if ``out`` holds a run of this comparison's settings, ``None`` if it
    holds none; raise if it holds another."""
    marker_path, config_path = out / MARKER, out / CONFIG
    if not marker_path.is_file():
        if (out / CHECKPOINT).is_file() or (out / WEIGHTS).is_file():
            raise CheckpointError(
                f"{out} holds a run that this comparison did not make: use another --out, or "
                "move that folder away."
            )
        return None
    marker = json.loads(marker_path.read_text())
    wanted = {"epochs": plan.epochs, "budget_seconds": plan.budget_seconds}
    for key, value in wanted.items():
        if marker.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(
                f"{out} holds a run made with {flag} {marker.get(key)}, not {value}: use the "
                "same options to continue it, another --out, or move that folder away."
            )
    if config_path.is_file():
        previous = json.loads(config_path.read_text())["config"]
        now = {
            "model": model, "dataset": plan.dataset, "image_size": plan.sizes[model],
            "seed": seed, "batch_size": plan.batch_size, "lr": plan.lrs[model],
        }  # fmt: skip
        for key in MUST_MATCH:
            if previous.get(key) != now[key]:
                raise CheckpointError(
                    f"{out} holds a run with {key.replace('_', ' ')} {previous.get(key)}, not "
                    f"{now[key]}: use the same options to continue it, another --out, or move "
                    "that folder away."
                )
    return marker


def _budget_epochs(config: TrainConfig, budget: float | None, data: DataBundle) -> int:
    """Epochs that fit ``budget`` seconds, from the median time of a few of the trainer's
    training steps on random images of the run's shape (the data pipeline and the epoch's
    bookkeeping add ~10%, allowed for), between 1 and :data:`MAX_BUDGET_EPOCHS`."""
    assert budget is not None
    times = step_seconds(config, data, steps=4)
    steps = -(-len(data.train) // config.batch_size)
    epoch_s = 1.1 * statistics.median(times[1:]) * steps  # the first step warms caches up
    return max(1, min(MAX_BUDGET_EPOCHS, int(budget // epoch_s)))
