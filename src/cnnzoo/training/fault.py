"""Fault injection: make a run kill itself at a chosen point, to prove that nothing is lost.

``CNNZOO_FAULT=kill:epoch=E[:step=S]`` sends SIGKILL to the process when training reaches step S
(default 1) of epoch E (both counted from 1, as the progress display counts them);
``CNNZOO_FAULT=kill:checkpoint:epoch=E`` sends it halfway through writing the checkpoint of
epoch E. SIGKILL cannot be caught, so this is what a power cut or the out-of-memory killer does.
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
    step: int = 1
    in_checkpoint: bool = False
    kind: str = "kill"
    rank: int | None = None

    def kills_at(self, epoch: int, step: int) -> bool:
        return (
            self.kind == "kill"
            and not self.in_checkpoint
            and (epoch, step)
            == (
                self.epoch,
                self.step,
            )
        )

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
        keys = ("epoch", "step", "rank") if kind == "nan" else ("epoch", "step")
        for part in parts[2 if in_checkpoint else 1 :]:
            key, value = part.split("=")
            if key not in keys or key in fields:
                raise ValueError
            fields[key] = int(value)
        if "epoch" not in fields or (in_checkpoint and "step" in fields):
            raise ValueError
        fault = Fault(
            fields["epoch"], fields.get("step", 1), in_checkpoint, kind, fields.get("rank")
        )
        if fault.epoch < 1 or fault.step < 1 or (fault.rank is not None and fault.rank < 0):
            raise ValueError
    except ValueError:
        raise InvalidArgumentError(
            f"{ENV}={text!r} is not a fault: write kill:epoch=E[:step=S] or "
            f"kill:checkpoint:epoch=E or nan:epoch=E[:step=S][:rank=R] (E and S count from 1)."
        ) from None
    return fault


def from_env() -> Fault | None:
    return parse(os.environ.get(ENV))


def kill() -> None:
    """Die at once, as a crash would: no cleanup, no flushing, no exception handlers."""
    os.kill(os.getpid(), signal.SIGKILL)
