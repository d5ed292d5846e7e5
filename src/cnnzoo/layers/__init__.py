"""Layers used by two or more model families."""

from cnnzoo.layers.blocks import (
    ConvBNAct,
    DropPath,
    NormArgs,
    SqueezeExcitation,
    make_divisible,
    paper_lrn,
)
from cnnzoo.layers.pool import POOL_KINDS, MinPool2d, StochasticPool2d, make_pool

__all__ = [
    "POOL_KINDS",
    "ConvBNAct",
    "DropPath",
    "MinPool2d",
    "NormArgs",
    "SqueezeExcitation",
    "StochasticPool2d",
    "make_divisible",
    "make_pool",
    "paper_lrn",
]
