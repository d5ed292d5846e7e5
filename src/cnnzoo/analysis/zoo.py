"""The zoo table: one row of registered facts per model (nothing is built)."""

from __future__ import annotations

from typing import Any

from cnnzoo.models import get_spec, list_models


def zoo_rows(family: str | None = None) -> list[dict[str, Any]]:
    """Name, family, year, parameters and conv + linear MACs at the default input, default
    input size and valid input sizes for every registered model (or one family).

    The counts are the registered metadata; the tests check them against the built models."""
    rows = []
    for name in list_models(family):
        spec = get_spec(name)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "year": spec.year,
                "params": spec.params,
                "macs": spec.macs,
                "input_size": list(spec.input_size),
                "num_classes": spec.num_classes,
                "min_size": spec.min_size,
                "max_size": spec.max_size,
                "valid_sizes": spec.valid_sizes,
                "torchvision": spec.torchvision,
                "paper": spec.paper,
            }
        )
    return rows
