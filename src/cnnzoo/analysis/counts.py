"""Thin helpers over :func:`cnnzoo.analysis.summary.summarize` for the counts tests and callers
need most often. There is one counting mechanism, the summary's shape-only trace; these only
pick numbers out of it.
"""

from __future__ import annotations

from torch import nn

from cnnzoo.analysis.summary import summarize


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; each shared tensor is counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Conv + linear multiply-adds of one image of ``input_size`` = (C, H, W)."""
    return summarize(model, input_size).macs
