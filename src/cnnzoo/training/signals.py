"""SIGTERM and SIGINT during training: finish the step, save, stop.

Schedulers (Slurm, Kubernetes, spot instances) preempt a job with SIGTERM and kill it a grace
period later; Ctrl-C sends SIGINT. Within :func:`stop_on_signals`, the first of either only sets
a flag that the training loop reads after every step (under torchrun, every process reduces it
with the step's loss check, so all stop after the same step); the trainer then writes a
mid-epoch checkpoint and :func:`cnnzoo.training.trainer.fit` returns, and ``cnnzoo train``
exits with :data:`EXIT_INTERRUPTED`. A second signal ends the process at once, as if nothing had
caught the first (what a user who presses Ctrl-C twice means). The previous handlers come back
when the block ends: ``fit`` is a library call too.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from cnnzoo.errors import EXIT_INTERRUPTED, Interrupted

__all__ = ["EXIT_INTERRUPTED", "Interrupted", "StopRequest", "resume_command", "stop_on_signals"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether a signal asked the run to stop, and which."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second: die of it, at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Catch SIGTERM and SIGINT for the block (main thread only: Python lets no other thread
    set handlers, and a run in another thread is left to its caller's handling)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def resume_command(argv: Sequence[str], world_size: int = 1) -> str:
    """The command that continues a run started with ``cnnzoo`` arguments ``argv`` (``train``
    and its options): the same, with ``--resume`` added unless it is there."""
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    if world_size > 1:
        nproc = os.environ.get("LOCAL_WORLD_SIZE", str(world_size))
        return shlex.join(["torchrun", "--nproc-per-node", nproc, "-m", "cnnzoo", *args])
    return shlex.join(["cnnzoo", *args])
