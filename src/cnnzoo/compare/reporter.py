"""What a comparison tells its user as it goes (kept light: the command line imports it to
register ``compare`` without loading the trainer)."""

from __future__ import annotations


class CompareReporter:
    """The trainer's reporter protocol (:class:`cnnzoo.training.trainer.Reporter`: ``log``,
    ``start_epoch``, ``step``, ``end_epoch``, called for the epochs of each run) plus the start
    and end of each model. The default says nothing."""

    def log(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, images: int, loss: float) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def begin_model(self, index: int, total: int, model: str, text: str) -> None:
        pass

    def end_model(self, model: str, text: str) -> None:
        pass
