"""Errors a user can cause. Each carries one sentence naming what is wrong and how to fix it.

The CLI prints ``str(error)`` on one line and exits with code 2; programming errors are left to
raise normally so that they show a traceback. :class:`Interrupted` is no error but a stop the
CLI reports the same way, with its own exit code.
"""

from __future__ import annotations

# EX_TEMPFAIL (sysexits.h): "a temporary failure; the user is invited to retry". Distinct from
# 0 (done), 1 (a crash), 2 (a bad option) and the shell's 128 + N for a process a signal killed
# (143, 130): a job script can requeue on 75 and only on 75.
EXIT_INTERRUPTED = 75


class Interrupted(Exception):
    """A signal stopped a run that a larger command started (``compare``): that command stops
    too, and ``cnnzoo`` exits with :data:`EXIT_INTERRUPTED` (rerunning it resumes)."""


class CnnzooError(Exception):
    """Base class of every error a user can cause."""


class UnknownModelError(CnnzooError, ValueError):
    """A model name that is not in the registry."""


class UnknownArgumentError(CnnzooError, TypeError):
    """A keyword argument that the model (or function) does not take. Also a ``TypeError``."""


class InvalidArgumentError(CnnzooError, ValueError):
    """An argument with a value outside what it accepts."""


class InputSizeError(CnnzooError, ValueError):
    """An input size the model cannot take (too small for a layer, or not what a layer expects)."""


class CheckpointError(CnnzooError):
    """A checkpoint that is missing, unreadable, or from another model or run."""


class TrainingDivergedError(CnnzooError):
    """The loss became NaN or infinite; the message names the epoch, step and learning rate."""


class DataError(CnnzooError):
    """A dataset that cannot be used: missing files, an unreadable image, an empty class, a
    file in the wrong format, or an unknown dataset name."""


class WeightsError(CnnzooError):
    """A weight file that cannot be used: missing, unsafe to unpickle, corrupt (hash mismatch),
    of another model, or not fitting the architecture."""


class ExportError(CnnzooError):
    """An export that cannot be made or does not compute what the model computes (parity
    failure), or a format whose optional packages are not installed."""


class FolderInUseError(CnnzooError):
    """An output folder that another live process is writing (its lock is held); the message
    names that process (pid@host, since when)."""


class DiskFullError(CnnzooError):
    """A write that found no space left on its device (or quota); the file written before
    stays intact. The message says how much was needed, how much is free, and the fix."""
