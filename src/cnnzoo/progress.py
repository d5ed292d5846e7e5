"""What a training run tells its user as it goes.

:class:`Reporter` is the protocol the trainer calls (``log``, ``start_epoch``, ``step``,
``end_epoch``, and ``should_stop`` before each epoch) and says nothing; :class:`EpochProgress`
is the console's, for ``cnnzoo train`` and ``cnnzoo compare``: a bar per epoch on a terminal,
plain lines elsewhere (logs, pipes, CI), nothing but errors when quiet. The trainer itself
stays free of any console.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class Reporter:
    """What a run tells its user as it goes. This one says nothing."""

    def log(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, images: int, loss: float) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def should_stop(self, history: list[dict]) -> bool:
        """Asked before each epoch with the epochs so far (``metrics.jsonl``'s rows, a resumed
        run's included): true ends the run there, as if it had been planned that long."""
        return False


class EpochProgress(Reporter):
    """The trainer's reporter on ``console``.

    Attributes:
        indent: put before every logged line (``compare`` nests runs under a model line).
        label: put before ``epoch E/N`` in the bar (``compare``: the model's name).
    """

    def __init__(self, console: Console, quiet: bool, indent: str = "") -> None:
        self.console, self.quiet, self.indent = console, quiet, indent
        self.live = console.is_terminal and not quiet
        self.label = ""
        self.progress: Progress | None = None

    def log(self, text: str) -> None:
        if not self.quiet:
            self.console.print(self.indent + text, highlight=False, markup=False)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.live:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn(f"{self.indent}{self.label}epoch {epoch}/{epochs}"), BarColumn(),
            TextColumn("{task.fields[speed]:>7.0f} img/s  loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(), console=self.console, transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task("train", total=steps, speed=0.0, loss=float("nan"))
        self.seen, self.start = 0, time.perf_counter()
        self.progress.start()

    def step(self, images: int, loss: float) -> None:
        if self.progress is None:
            return
        self.seen += images
        speed = self.seen / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=1, speed=speed, loss=loss)

    def end_epoch(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
