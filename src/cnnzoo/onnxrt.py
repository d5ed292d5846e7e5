"""ONNX Runtime sessions on the CPU, shared by the export's file checks and the ``onnxruntime``
and ``int8`` inference backends.

A session's worker threads spin between the operators of a run (waking a sleeping thread for
each of a few hundred small operators costs 5-7% on EfficientNet-B0 and DenseNet-121 at 2
threads), but stop the moment the run returns (``session.force_spinning_stop``): by default they
spin on for a while and take the cores from whatever runs next (measured: the next PyTorch call
2× slower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.checks import check_int
from cnnzoo.extras import require


def onnx_session(
    path: str | Path, threads: int | None = None, *, needed_by: str = "ONNX Runtime"
) -> Any:
    """An ONNX Runtime session for ``path`` on the CPU (``CPUExecutionProvider`` only), its
    worker threads spinning during a run and stopped as soon as it returns.

    Args:
        path: an ONNX file.
        threads: intra-op threads; ``torch.get_num_threads()`` when ``None``, so that ONNX
            Runtime and eager torch are measured on equal terms.
        needed_by: what wants the session, named in the error when onnxruntime is missing.

    Raises:
        ExportError: onnxruntime is not installed.
        InvalidArgumentError: ``threads`` is not a positive integer.
    """
    (onnxruntime,) = require("onnxruntime", needed_by=needed_by)
    if threads is not None:
        check_int("threads", threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # one graph at a time: the intra-op threads do the work
    options.log_severity_level = 3  # errors only; a failure still raises
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(session: Any, x: torch.Tensor) -> torch.Tensor:
    """Run a one-input, one-output session on the batch ``x``; the output as a tensor."""
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: as_array(x)})[0])


def as_array(x: torch.Tensor) -> Any:
    """``x`` as a C-contiguous float32 NumPy array, sharing its memory when it is one already.

    Touches torch as little as it can: after a pause, each torch call costs 20-80 µs while the
    caches are cold (measured after 50 ms idle), and a batch-1 int8 GoogLeNet runs in 5 ms."""
    try:
        array = x.numpy()  # a CPU tensor without grad: no copy
    except (RuntimeError, TypeError):  # one that needs grad, on a GPU, or bfloat16
        array = x.detach().to("cpu", torch.float32).numpy()
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np.float32)
    return array
