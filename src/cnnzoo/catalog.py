"""The zoo table that ``cnnzoo list`` prints, read from a file shipped with the package.

Each row holds the registered facts of one model (name, family, year, parameters, MACs, input
sizes, papers). The registry itself is filled by importing every model family, and with them
torch: seconds, for a command that only reads a table. So the table is also kept as
``zoo.json`` beside this module, written from the registry by ``python -m cnnzoo.catalog``;
tests/test_startup.py fails, naming that command, whenever the file and the registry differ.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

FILE = "zoo.json"


def registry_rows() -> list[dict[str, Any]]:
    """Every registered model's row, from the registry (imports torch and every family)."""
    from cnnzoo.models import get_spec, list_models

    rows = []
    for name in list_models():
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


def zoo_rows(family: str | None = None) -> list[dict[str, Any]]:
    """The rows of every model (or of one family), in registration order (families in paper
    order), from the shipped table: no torch. An unknown family has no rows."""
    rows = json.loads(resources.files("cnnzoo").joinpath(FILE).read_text(encoding="utf-8"))
    return [r for r in rows if family is None or r["family"] == family]


def render(rows: list[dict[str, Any]]) -> str:
    """The file's text for ``rows``: one model per line, so that a change reads as a diff."""
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"


def main() -> None:
    """Rewrite zoo.json from the registry (run after adding or changing a model)."""
    from pathlib import Path

    from cnnzoo.fileio import atomic_write_text

    path = Path(__file__).with_name(FILE)
    atomic_write_text(path, render(registry_rows()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
