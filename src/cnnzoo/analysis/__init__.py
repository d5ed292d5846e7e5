"""Counting (formulas, the summary, valid input sizes) kept apart from rendering (render.py)."""

from cnnzoo.analysis.counts import count_params, model_macs
from cnnzoo.analysis.input_size import check_input, valid_input_range
from cnnzoo.analysis.summary import LayerRow, Summary, TrainingMemory, summarize

__all__ = [
    "LayerRow",
    "Summary",
    "TrainingMemory",
    "check_input",
    "count_params",
    "model_macs",
    "summarize",
    "valid_input_range",
]
