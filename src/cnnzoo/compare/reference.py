"""The published ImageNet figures, for ``--reference imagenet``.

``imagenet_reference.json`` (beside this file) is a copy of the project's reference table's
fields name, input, params, macs, top1, top5 and weights, for every model with a published
ImageNet top-1 (torchvision's weights; the paper's figure where torchvision has no weights, marked
``weights: "paper"``). The test suite checks the copy against the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).with_name("imagenet_reference.json")


@cache
def _table() -> list[dict[str, Any]]:
    return json.loads(REFERENCE_FILE.read_text())["models"]


def imagenet_rows(models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The published ImageNet-1K figures: one dict per model (``name``, ``input``, ``params``,
    ``macs`` at ``input``, ``top1``/``top5`` in percent, ``weights``), in the table's order.

    Args:
        models: only these registry names (those with published figures); ``None``: all.
    """
    rows = [dict(r) for r in _table()]
    if models is None:
        return rows
    wanted = set(models)
    return [r for r in rows if r["name"] in wanted]


def chart_rows(models: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the reference ball chart (``model``, ``params``, ``macs``, ``top1_pct``,
    ``image_size``) of the compared models that have published figures, and the names of those
    that have none."""
    rows = [
        {"model": r["name"], "params": r["params"], "macs": r["macs"], "top1_pct": r["top1"],
         "image_size": r["input"][-1]}
        for r in imagenet_rows(models)
    ]  # fmt: skip
    found = {r["model"] for r in rows}
    return rows, [m for m in models if m not in found]
