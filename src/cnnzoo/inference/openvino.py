"""The OpenVINO backends: ``openvino`` (fp32), ``openvino_bf16`` and ``openvino_int8`` (NNCF
post-training quantization).

Each reads the model's ONNX file with ``read_model``: the one given to ``optimize``
(``onnx_file``), else the checked export the call makes once for all its ONNX Runtime and
OpenVINO backends (:func:`cnnzoo.inference.ort.onnx_file`). Not ``openvino.convert_model`` on
the torch model, although that sets up faster (4-11 s against 8-19 s for export and read on
resnet18): NNCF's int8 GoogLeNet from the converted model ran at 222 img/s against 346 from
the ONNX file (batch 8, 224 px, 2 threads, interleaved; the same from torchvision's own export),
and bf16 GoogLeNet at batch 1 at 111 against 122; the other models were within noise either
way. The fp32 backend is checked against eager like every fp32 backend.

Nothing here reads the network: before OpenVINO or NNCF is imported, the ``openvino_telemetry``
package is made unimportable in this process, so OpenVINO's model converter and NNCF use the
stubs they ship for when it is not installed (they send nothing), and ``NNCF_CI`` is set (the
variable with which NNCF turns its telemetry off). Without this the converter sends usage data
unless the user has opted out (``opt_in_out --opt_out``).

Models are compiled for the CPU per batch size (static shapes run faster than a dynamic batch
axis), with ``threads`` inference threads, one stream and the latency hint; the first call at a
new batch size compiles once more.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.extras import require
from cnnzoo.inference import backends
from cnnzoo.inference.backends import Built, Context
from cnnzoo.inference.ort import onnx_file
from cnnzoo.onnxrt import as_array

NEEDED_BY = "The OpenVINO backends (openvino, openvino_bf16, openvino_int8)"
# Precision hints by backend: f32 keeps OpenVINO from its default of bf16 on CPUs that have it.
HINTS = {"openvino": "f32", "openvino_bf16": "bf16"}


def telemetry_off() -> None:
    """Make sure neither OpenVINO nor NNCF can send usage data from this process.

    ``openvino`` imports ``openvino_telemetry`` when it loads (for its model converter), and
    NNCF creates a telemetry client on import: with the package unimportable both fall back to
    the stubs they ship for when it is not installed. Done only if it is not loaded already (the
    user's own code may use it; then ``NNCF_CI`` still turns NNCF's off).
    """
    os.environ.setdefault("NNCF_CI", "1")
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # None makes `import` raise ImportError, as documented for sys.modules


def openvino() -> Any:
    """The ``openvino`` module, telemetry off; a one-line :class:`ExportError` naming the extra
    when it is not installed."""
    telemetry_off()
    return require("openvino", needed_by=NEEDED_BY)[0]


def cpu_bf16(ov: Any) -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (``OPTIMIZATION_CAPABILITIES`` lists
    ``BF16``: AVX512-BF16 or AMX) and the CPU flags agree (:func:`backends.bf16_capable`)."""
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps and backends.bf16_capable()


def build_openvino(ctx: Context) -> Built:
    return _build(ctx, "openvino")


def build_openvino_bf16(ctx: Context) -> Built:
    return _build(ctx, "openvino_bf16")


def build_openvino_int8(ctx: Context) -> Built:
    return _build(ctx, "openvino_int8")


def _build(ctx: Context, name: str) -> Built:
    ov = openvino()
    if name == "openvino_int8":
        require("nncf", needed_by=NEEDED_BY)
    if name == "openvino_bf16" and not cpu_bf16(ov):
        raise InvalidArgumentError(backends.NO_BF16.format(backend=name))
    core = ov.Core()
    path, how = onnx_file(ctx)
    start = time.perf_counter()
    model = core.read_model(str(path))
    version = ov.__version__.split("-")[0]
    note = f"OpenVINO {version} CPU, ONNX file {how}, read in {time.perf_counter() - start:.1f} s"
    config = {
        "INFERENCE_NUM_THREADS": ctx.threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if name in HINTS:
        config["INFERENCE_PRECISION_HINT"] = HINTS[name]
        note += f", INFERENCE_PRECISION_HINT={HINTS[name]}"
    else:
        model = _quantize(model, ctx)
        assert ctx.calibration is not None
        note += (
            f", int8 by NNCF post-training quantization calibrated on {len(ctx.calibration)} "
            "images (the operations it leaves unquantized run at OpenVINO's default precision)"
        )
    compiled: dict[int, Any] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        batch = len(x)
        if batch not in compiled:  # a static shape per batch size
            shaped = model.clone()
            shaped.reshape({shaped.inputs[0].any_name: [batch, *ctx.input_size]})
            compiled[batch] = core.compile_model(shaped, "CPU", config).create_infer_request()
        request = compiled[batch]
        request.infer({0: as_array(x)}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    run(ctx.example)  # compiles for the example's batch now, inside the setup time
    return Built(run, note, exact=name == "openvino", runs_torch=False)


def _quantize(model: Any, ctx: Context) -> Any:
    """NNCF's default post-training quantization (the performance preset: symmetric int8
    weights and activations, per-channel weights), one image per calibration item so that every
    image counts as one sample of ``subset_size``."""
    import nncf

    if ctx.calibration is None:  # optimize checks this first; kept for direct callers
        what, shape = "backend 'openvino_int8'", f"(M, {', '.join(map(str, ctx.input_size))})"
        raise InvalidArgumentError(backends.NEEDS_CALIBRATION.format(what=what, shape=shape))
    images = [img[None].contiguous().numpy() for img in ctx.calibration]
    return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))
