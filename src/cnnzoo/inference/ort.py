"""The ONNX Runtime backends: ``onnxruntime`` (fp32) and ``int8`` (post-training static
quantization).

Both load an ONNX file of the model (:func:`onnx_file`: the one given to ``optimize``, else one
exported with :func:`cnnzoo.export.export_model` — dynamo exporter, opset 18, dynamic batch,
checked against the model — once per ``optimize`` call) into a session on the
``CPUExecutionProvider`` with ``threads`` intra-op threads whose spinning stops as soon as a run
returns (``session.force_spinning_stop``): ONNX Runtime's workers otherwise keep spinning for a
while after each run, and were measured to slow the next PyTorch call in the same process about
2×, while turning spinning off altogether costs 5-7% on graphs of many small operators. The
export's temporary folder is removed when ``optimize`` returns: the sessions hold the model.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cnnzoo.checks import check_int
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.export import INPUT_NAME, ONNX_OPSET, export_model
from cnnzoo.extras import require
from cnnzoo.inference.backends import Built, Context
from cnnzoo.onnxrt import onnx_session, run_onnx

CALIBRATION_BATCH = 16  # images per calibration run (memory: every activation is kept)
CALIBRATION_IMAGES = 256  # plenty for MinMax ranges; each one costs a forward pass at setup


def calibration_images(train: Any, count: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """``count`` images for ``int8``'s calibration, spread evenly over ``train`` (a prepared,
    unaugmented training split of ``(image, label)`` items): the splits are ordered by class, so
    the first ``count`` would calibrate on a few classes only.

    Returns:
        ``(min(count, len(train)), C, H, W)`` float images.

    Raises:
        InvalidArgumentError: ``count`` is not a positive integer, or ``train`` is empty.
    """
    check_int("count", count)
    if len(train) == 0:
        raise InvalidArgumentError("the calibration split has no images: give a dataset with some.")
    count = min(count, len(train))
    step = len(train) // count
    return torch.stack([train[i][0] for i in range(0, step * count, step)])


NEEDED_BY = "The ONNX Runtime backends (onnxruntime, int8)"


def _onnxruntime() -> Any:
    return require("onnxruntime", needed_by=NEEDED_BY)[0]


def ort_session(path: str | Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads that stop spinning
    when a run returns (:func:`cnnzoo.onnxrt.onnx_session`)."""
    return onnx_session(path, threads, needed_by=NEEDED_BY)


def onnx_file(ctx: Context) -> tuple[Path, str]:
    """The model as an ONNX file and how it came to be: the file given to ``optimize``, else
    exported (and checked against the model) once per ``optimize`` call, into its temporary
    folder, so that ``onnxruntime``, ``int8`` and the OpenVINO backends of one ``auto`` search
    share one export (the dynamo exporter takes 2-15 s per model on 2 cores)."""
    if ctx.onnx_file is not None:
        return ctx.onnx_file, f"loaded from {ctx.onnx_file.name}"
    if "export" in ctx._memo:  # made by an earlier backend of this call
        return ctx._memo["export"], "the export of this call"
    path = ctx.folder / "model.onnx"
    report = export_model(
        ctx.model, path, "onnx", input_size=ctx.input_size, model_name=ctx.model_name
    )
    ctx._memo["export"] = path
    seconds = report.export_seconds + report.check_seconds
    return path, f"exported and checked in {seconds:.1f} s"


def build_onnxruntime(ctx: Context) -> Built:
    _onnxruntime()
    path, how = onnx_file(ctx)
    session = ort_session(path, ctx.threads)
    note = (
        f"ONNX opset {ONNX_OPSET} ({how}), CPUExecutionProvider, workers stop spinning when a "
        "run returns"
    )
    return Built(lambda x: run_onnx(session, x), note, runs_torch=False)


def build_int8(ctx: Context) -> Built:
    """Static int8 quantization: QDQ format, signed int8 weights per output channel and
    unsigned 8-bit activations with ranges from the calibration images (MinMax), after ONNX
    Runtime's pre-processing (shape inference and graph optimisation: BatchNorm folded, so that
    each convolution is quantized once).

    Unsigned activations (U8S8), not ONNX Runtime's default signed ones (S8S8): its x86 VNNI
    kernels multiply u8 by s8, and S8S8 ran ResNet-18 3× slower here (184 vs 62 ms at batch 8,
    224 px, one thread), no faster than fp32. On x86 without VNNI, U8S8 can saturate in the
    16-bit intermediate sums, so weights then use 7 bits (``reduce_range``), as ONNX Runtime
    advises.
    """
    _onnxruntime()
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert ctx.calibration is not None  # optimize checks it before building
    reduce_range = platform.machine().lower() in ("x86_64", "amd64") and not _has_vnni()
    fp32, _ = onnx_file(ctx)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-int8-") as tmp:
        pre, quantized = Path(tmp) / "model.pre.onnx", Path(tmp) / "model.int8.onnx"
        quant_pre_process(str(fp32), str(pre))
        q.quantize_static(
            str(pre),
            str(quantized),
            _reader(ctx.calibration, q.CalibrationDataReader),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        session = ort_session(quantized, ctx.threads)
    weights = "7-bit" if reduce_range else "int8"
    note = (
        f"ONNX Runtime int8 (QDQ, u8 activations, {weights} per-channel weights, calibrated on "
        f"{len(ctx.calibration)} images), workers stop spinning when a run returns"
    )
    return Built(lambda x: run_onnx(session, x), note, exact=False, runs_torch=False)


def _has_vnni() -> bool:
    """Whether the CPU multiplies 8-bit integers with VNNI (or AMX) instructions (Linux only;
    elsewhere the safe answer is no)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _reader(images: torch.Tensor, base: type) -> Any:
    """A calibration data reader (``onnxruntime.quantization.CalibrationDataReader``) over
    ``images`` in batches; built here so that onnxruntime is imported only when used."""

    class Reader(base):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(images.split(CALIBRATION_BATCH))

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {INPUT_NAME: batch.detach().to("cpu", torch.float32).contiguous().numpy()}

    return Reader()
