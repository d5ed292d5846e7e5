"""Numbers for people: counts in K/M/G, bytes in KiB/MiB/GiB (every table and chart label)."""

from __future__ import annotations


def human(n: float, significant: int | None = None) -> str:
    """A count in thousands (K), millions (M) or billions (G): ``1234567`` → ``"1.23M"`` (two
    decimals), or with ``significant=3``, ``11689512`` → ``"11.7M"`` and ``61706`` →
    ``"61.7K"`` (chart labels and narrow table columns)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.{significant}g}{unit}" if significant else f"{value:.2f}{unit}"
    return f"{n:.{significant}g}" if significant else str(int(n))


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``: bytes in powers of 1024."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
