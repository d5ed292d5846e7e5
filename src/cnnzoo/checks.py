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
from typing import TypeGuard

from cnnzoo.errors import CnnzooError, InvalidArgumentError


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool`` (``True`` is an ``int`` to Python, never a
    count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """True for a finite ``int`` or ``float`` that is not a ``bool``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def number_rule(
    *, integer: bool = False, low: float | None = None, above: bool = False,
    below: float | None = None,
) -> str:  # fmt: skip
    """What a number option takes, in words: "a positive integer", "a number in [0, 1)"..."""
    if integer:
        if low is None:
            return "an integer"
        return "a positive integer" if low == 1 and not above else f"a whole number ≥ {low:g}"
    if low is None:
        return "a finite number" if below is None else f"a number < {below:g}"
    if below is not None:
        return f"a number in {'(' if above else '['}{low:g}, {below:g})"
    return f"a number {'>' if above else '≥'} {low:g}"


def check_number(
    name: str,
    value: object,
    *,
    integer: bool = False,
    low: float | None = None,
    above: bool = False,
    below: float | None = None,
    error: type[CnnzooError] = InvalidArgumentError,
) -> float:
    """``value`` if it is a finite number (an int when ``integer``) with ``low ≤ value`` (``<``
    when ``above``) and ``value < below``; otherwise one line saying what ``name`` takes."""
    if (integer and is_int(value)) or (not integer and is_number(value)):
        v = float(value)
        if (low is None or (v > low if above else v >= low)) and (below is None or v < below):
            return value
    rule = number_rule(integer=integer, low=low, above=above, below=below)
    raise error(f"{name} must be {rule}, got {value!r}.")


def check_int(
    name: str, value: object, *, minimum: int = 1, error: type[CnnzooError] = InvalidArgumentError
) -> int:
    """``value`` if it is an int of at least ``minimum`` (1: a positive integer)."""
    return int(check_number(name, value, integer=True, low=minimum, error=error))


def check_rate(
    name: str, value: object, *, error: type[CnnzooError] = InvalidArgumentError
) -> float:
    """``value`` if it is a number in [0, 1): a dropout or drop-path rate."""
    return float(check_number(name, value, low=0, below=1, error=error))


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
