"""Fault injection: make a run kill itself at a chosen point, to prove that nothing is lost.

``CNNZOO_FAULT=kill:epoch=E[:step=S]`` sends SIGKILL to the process when training reaches step S
(default 1) of epoch E (both counted from 1, as the progress display counts them);
``CNNZOO_FAULT=kill:checkpoint:epoch=E`` sends it halfway through writing the checkpoint of
epoch E. SIGKILL cannot be caught, so this is what a power cut or the out-of-memory killer does.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from cnnzoo.errors import InvalidArgumentError

ENV = "CNNZOO_FAULT"


@dataclass(frozen=True)
class Fault:
    """Where to kill the run: at a training step, or inside a checkpoint write."""

    epoch: int
    step: int = 1
    in_checkpoint: bool = False


def parse(text: str | None) -> Fault | None:
    """Parse the ``CNNZOO_FAULT`` value; ``None`` or empty means no fault."""
    if not text:
        return None
    parts = text.split(":")
    fields: dict[str, int] = {}
    try:
        if parts[0] != "kill":
            raise ValueError
        in_checkpoint = len(parts) > 1 and parts[1] == "checkpoint"
        for part in parts[2 if in_checkpoint else 1 :]:
            key, value = part.split("=")
            if key not in ("epoch", "step") or key in fields:
                raise ValueError
            fields[key] = int(value)
        if "epoch" not in fields or (in_checkpoint and "step" in fields):
            raise ValueError
        fault = Fault(fields["epoch"], fields.get("step", 1), in_checkpoint)
        if fault.epoch < 1 or fault.step < 1:
            raise ValueError
    except ValueError:
        raise InvalidArgumentError(
            f"{ENV}={text!r} is not a fault: write kill:epoch=E[:step=S] or "
            f"kill:checkpoint:epoch=E (E and S count from 1)."
        ) from None
    return fault


def from_env() -> Fault | None:
    return parse(os.environ.get(ENV))


def kill() -> None:
    """Die at once, as a crash would: no cleanup, no flushing, no exception handlers."""
    os.kill(os.getpid(), signal.SIGKILL)
