"""One way to check an option: the checks every layer of cnnzoo shares.

Each raises :class:`~cnnzoo.errors.InvalidArgumentError` (or the error class the caller names)
with one sentence that names the option, the value and what it accepts. ``name`` is what the
user typed: ``"--batch-size"`` on the command line, ``"batch_size"`` in the library.

This module imports nothing of cnnzoo but ``errors``, so every other module may use it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

from cnnzoo.errors import CnnzooError, InvalidArgumentError

_WHAT_INT = {1: "a positive integer", 0: "a non-negative integer"}


def is_int(value: object) -> bool:
    """True for an ``int`` that is not a ``bool`` (``True`` is an ``int`` to Python, never a
    count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a finite ``int`` or ``float`` that is not a ``bool``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def check_int(
    name: str, value: object, *, minimum: int = 1, error: type[CnnzooError] = InvalidArgumentError
) -> int:
    """``value`` if it is an int of at least ``minimum`` (1: positive, 0: non-negative)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = _WHAT_INT.get(minimum, f"an integer ≥ {minimum}")
        raise error(f"{name} must be {what}, got {value!r}.")
    return value


def check_number(
    name: str,
    value: object,
    *,
    positive: bool = True,
    error: type[CnnzooError] = InvalidArgumentError,
) -> float:
    """``value`` as a float if it is a finite number, > 0 when ``positive`` (else ≥ 0)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value <= 0 if positive else value < 0)
    ):
        what = "a positive number" if positive else "a non-negative number"
        raise error(f"{name} must be {what}, got {value!r}.")
    return float(value)


def check_rate(
    name: str, value: object, *, error: type[CnnzooError] = InvalidArgumentError
) -> float:
    """``value`` as a float if it is a number in [0, 1): a dropout or drop-path rate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise error(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def did_you_mean(value: object, choices: Iterable[str], *, n: int = 3) -> str:
    """``" (did you mean a, b?)"`` for the close matches of ``value`` among ``choices``, or
    ``""``: the one hint every "unknown name" message ends with."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_choice(
    name: str,
    value: object,
    choices: Iterable[str],
    *,
    error: type[CnnzooError] = InvalidArgumentError,
) -> str:
    """``value`` if it is one of ``choices``; otherwise one line listing them, close matches
    first."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices)
        raise error(f"{name} {value!r} is not one of {', '.join(choices)}{hint}.")
    return value
