"""What a comparison tells its user as it goes (kept light: the command line imports it to
register ``compare`` without loading the trainer)."""

from __future__ import annotations

from cnnzoo.progress import Reporter


class CompareReporter(Reporter):
    """The trainer's reporter protocol (:class:`cnnzoo.progress.Reporter`, called for the epochs
    of each run) plus the start and end of each model. The default says nothing."""

    def begin_model(self, index: int, total: int, model: str, text: str) -> None:
        pass

    def end_model(self, model: str, text: str) -> None:
        pass
