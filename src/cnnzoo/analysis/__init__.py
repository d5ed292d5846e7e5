"""Counting (formulas, per-layer rows) kept apart from rendering."""

from cnnzoo.analysis.counts import LayerRow, count_params, layer_rows, model_macs

__all__ = ["LayerRow", "count_params", "layer_rows", "model_macs"]
