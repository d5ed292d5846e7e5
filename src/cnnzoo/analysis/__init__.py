"""Counting (formulas, per-layer rows, valid input sizes) kept apart from rendering."""

from cnnzoo.analysis.counts import LayerRow, count_params, layer_rows, model_macs
from cnnzoo.analysis.input_size import check_input, valid_input_range
from cnnzoo.analysis.summary import Summary, summarize

__all__ = [
    "LayerRow",
    "Summary",
    "check_input",
    "count_params",
    "layer_rows",
    "model_macs",
    "summarize",
    "valid_input_range",
]
