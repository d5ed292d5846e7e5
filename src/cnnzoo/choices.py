"""The names the options take, kept apart from the code that implements them.

The command line lists these in its help and checks against them while it builds its parser;
keeping them here, with no import of torch, lets ``cnnzoo --help``, ``cnnzoo <command> --help``
and ``cnnzoo list`` answer in a fraction of a second instead of after torch's import (seconds
and ~900 MB). The modules that implement the names use these tuples, and
tests/test_startup.py checks that each implements exactly these.
"""

from __future__ import annotations

# training/optim.py builds each.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
# data/transforms.py: the augmentation presets (docs/data.md).
AUGMENTS = ("none", "light", "standard")
DEVICES = ("auto", "cpu", "cuda", "mps")
# inference/__init__.py's builders, in the order `auto` lists them.
ENGINES = (
    "eager", "channels_last", "fused", "fused_channels_last", "onnxruntime", "openvino", "compile",
    "bf16", "openvino_bf16", "int8", "openvino_int8", "cuda",
)  # fmt: skip
BACKENDS = ("auto", *ENGINES)
# visualize/cam.py: the class activation methods (pytorch-grad-cam).
CAM_METHODS = ("gradcam", "gradcam++", "scorecam")
# optimize(precision=...): fp32 is the default; bf16 and int8 are used only when asked for.
PRECISIONS = ("fp32", "bf16", "int8")
# The arithmetic each engine runs in (cuda: its cuda_dtype, bf16 unless fp16 is asked for).
ENGINE_PRECISION = {
    **dict.fromkeys(ENGINES, "fp32"),
    "bf16": "bf16", "openvino_bf16": "bf16", "cuda": "bf16",
    "int8": "int8", "openvino_int8": "int8",
}  # fmt: skip
