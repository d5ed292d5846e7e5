"""Fault injection: make a run kill itself at a chosen point, to prove that nothing is lost.

``CNNZOO_FAULT=kill:epoch=E[:step=S][:rank=R]`` sends SIGKILL to the process when training
reaches step S (default 1) of epoch E (both counted from 1, as the progress display counts
them), before the step runs; ``CNNZOO_FAULT=kill:checkpoint:epoch=E[:step=S]`` sends it halfway
through writing the checkpoint of epoch E (its end; with ``step``, the mid-epoch checkpoint
after step S, ``--checkpoint-every``). SIGKILL cannot be caught, so this is what a power cut or
the out-of-memory killer does. With ``rank`` only process R of a distributed run dies. A kill
happens on a run's first attempt only: torchrun counts its restarts in
``TORCHELASTIC_RESTART_COUNT``, and the restarted processes (same environment) must live.
``CNNZOO_FAULT=nan:epoch=E[:step=S][:rank=R]`` makes the loss NaN at that step (on process R of a
distributed run only; on every process without ``rank``), to prove that the run stops in one
line and, under DDP, that no process is left waiting for the others.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from cnnzoo.errors import InvalidArgumentError

ENV = "CNNZOO_FAULT"


@dataclass(frozen=True)
class Fault:
    """Where to kill the run (at a training step, or inside a checkpoint write), or where to
    make its loss NaN (``kind == "nan"``, on process ``rank`` or, when ``None``, on all)."""

    epoch: int
    step: int = 1  # in a checkpoint: 0 is the epoch's own, S the mid-epoch one after step S
    in_checkpoint: bool = False
    kind: str = "kill"
    rank: int | None = None

    def kills_at(self, epoch: int, step: int, rank: int = 0) -> bool:
        return (
            self.kind == "kill"
            and not self.in_checkpoint
            and (epoch, step) == (self.epoch, self.step)
            and self.rank in (None, rank)
            and first_attempt()
        )

    def kills_in_checkpoint(self, epoch: int, step: int) -> bool:
        """Whether to die halfway through writing the checkpoint after ``step`` of ``epoch``
        (0: the one at the epoch's end)."""
        return self.in_checkpoint and (epoch, step) == (self.epoch, self.step) and first_attempt()

    def poisons(self, epoch: int, step: int, rank: int) -> bool:
        return (
            self.kind == "nan"
            and (epoch, step) == (self.epoch, self.step)
            and self.rank in (None, rank)
        )


def parse(text: str | None) -> Fault | None:
    """Parse the ``CNNZOO_FAULT`` value; ``None`` or empty means no fault."""
    if not text:
        return None
    parts = text.split(":")
    fields: dict[str, int] = {}
    try:
        kind = parts[0]
        if kind not in ("kill", "nan"):
            raise ValueError
        in_checkpoint = kind == "kill" and len(parts) > 1 and parts[1] == "checkpoint"
        keys = ("epoch", "step") if in_checkpoint else ("epoch", "step", "rank")
        for part in parts[2 if in_checkpoint else 1 :]:
            key, value = part.split("=")
            if key not in keys or key in fields:
                raise ValueError
            fields[key] = int(value)
        if "epoch" not in fields:
            raise ValueError
        step = fields.get("step", 0 if in_checkpoint else 1)
        fault = Fault(fields["epoch"], step, in_checkpoint, kind, fields.get("rank"))
        if fault.epoch < 1 or fault.step < (0 if in_checkpoint else 1) or fields.get("step") == 0:
            raise ValueError
        if fault.rank is not None and fault.rank < 0:
            raise ValueError
    except ValueError:
        raise InvalidArgumentError(
            f"{ENV}={text!r} is not a fault: write kill:epoch=E[:step=S][:rank=R] or "
            "kill:checkpoint:epoch=E[:step=S] or nan:epoch=E[:step=S][:rank=R] (E and S count "
            "from 1)."
        ) from None
    return fault


def from_env() -> Fault | None:
    return parse(os.environ.get(ENV))


def first_attempt() -> bool:
    """False in a group torchrun restarted after a failure."""
    return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def kill() -> None:
    """Die at once, as a crash would: no cleanup, no flushing, no exception handlers."""
    os.kill(os.getpid(), signal.SIGKILL)
