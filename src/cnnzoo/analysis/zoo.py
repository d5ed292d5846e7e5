"""The zoo table: one row of facts per registered model, counted on the meta device."""

from __future__ import annotations

from typing import Any

import torch

from cnnzoo.analysis.counts import count_params, model_macs
from cnnzoo.registry import get_spec, list_models


def zoo_rows(family: str | None = None) -> list[dict[str, Any]]:
    """Name, family, year, parameters and conv + linear MACs at the default input, default
    input size and valid input sizes for every registered model (or one family)."""
    rows = []
    for name in list_models(family):
        spec = get_spec(name)
        with torch.device("meta"):
            model = spec.builder(num_classes=spec.num_classes, in_chans=spec.input_size[0])
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "year": spec.year,
                "params": count_params(model),
                "macs": model_macs(model, spec.input_size),
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
