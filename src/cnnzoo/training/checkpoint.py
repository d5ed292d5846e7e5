"""Checkpoints that survive a kill: written atomically, loaded without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
``torch.load(weights_only=True)`` reads it; it is written with :mod:`cnnzoo.fileio`, so a kill
at any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.errors import CheckpointError
from cnnzoo.fileio import atomic_write_bytes
from cnnzoo.training import fault as faults


def rng_state() -> dict[str, Any]:
    """Every random generator the run uses, in a form ``weights_only`` loading accepts."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    # The global RandomState is MT19937, whose legacy state is this 5-tuple (numpy returns a
    # dict only for other bit generators).
    assert isinstance(np_state, tuple)
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, checkpoint: dict[str, Any], epoch: int, step: int = 0) -> None:
    """Save ``checkpoint`` atomically; honours ``CNNZOO_FAULT=kill:checkpoint:epoch=E[:step=S]``
    (``step``: 0 for the checkpoint at the end of ``epoch``, S for the one after its step S)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    fault = faults.from_env()
    halfway = fault is not None and fault.kills_in_checkpoint(epoch, step)
    atomic_write_bytes(path, buffer.getvalue(), faults.kill if halfway else None)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code in the file can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: train without --resume first.") from None
    except Exception as err:  # a truncated or foreign file: say which, in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first}") from None
