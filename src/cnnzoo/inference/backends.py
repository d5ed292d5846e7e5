"""The PyTorch backends: eager, channels_last, fused (BatchNorm folded), fused_channels_last,
compile, bf16 (autocast) and cuda. Each builder takes the :class:`Context` and returns a
:class:`Built`: the function that runs a batch and a few words on what it does. The ONNX Runtime
backends are in :mod:`cnnzoo.inference.ort`, the OpenVINO ones in
:mod:`cnnzoo.inference.openvino`.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.inference.fold import fold_batchnorm
from cnnzoo.parity import fp32_rounding_error

CUDA_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_BF16 = (
    "backend {backend!r} needs a CPU with bfloat16 instructions (avx512_bf16 or AMX), and this "
    "one has none: use precision 'fp32' (auto), or 'int8' with calibration images."
)
NEEDS_CALIBRATION = (
    "{what} needs calibration images: pass calibration= a few hundred preprocessed "
    "training images of shape {shape} (the CLI: --calibrate DATASET)."
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_capable() -> bool:
    """Whether this CPU computes in bfloat16 natively (``avx512_bf16`` or ``amx_bf16`` in
    /proc/cpuinfo; elsewhere oneDNN's own check). Without them torch emulates bf16, slower than
    fp32, so the bf16 backends refuse and ``precision="bf16"`` falls back to fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return bool(torch.backends.mkldnn.is_available() and _mkldnn_bf16())
    return any(flag in flags for flag in BF16_FLAGS)


def _mkldnn_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


@dataclass
class Context:
    """What every builder gets.

    Attributes:
        model: an eval-mode copy of the user's model (builders that change modules copy it
            again; ``eager`` and ``compile`` use it as it is).
        example: the example batch ``(N, C, H, W)``.
        threads: intra-op threads.
        name: the model's name for messages and files (registry name or class name).
        model_name: the registry name when the user gave one (written into ONNX files).
        calibration: images for ``int8`` calibration, or ``None``.
        cuda_dtype: ``"bf16"`` or ``"fp16"``, the autocast type of ``cuda``.
        onnx_file: the user's ONNX file of the model (``optimize``'s ``onnx_file``), which the
            ONNX Runtime and OpenVINO backends load instead of exporting the model (without
            one, the first of them exports once for all: :func:`cnnzoo.inference.ort.onnx_file`).
        folder: a temporary folder for the files of this ``optimize`` call, removed when it
            returns (:meth:`close`).
    """

    model: nn.Module
    example: torch.Tensor
    threads: int
    name: str
    model_name: str | None = None
    calibration: torch.Tensor | None = None
    cuda_dtype: str = "bf16"
    onnx_file: Path | None = None
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def folder(self) -> Path:
        if "folder" not in self._memo:
            self._memo["folder"] = tempfile.TemporaryDirectory(prefix="cnnzoo-optimize-")
        return Path(self._memo["folder"].name)

    def close(self) -> None:
        """Remove :attr:`folder` (the sessions hold what they loaded from it)."""
        folder = self._memo.pop("folder", None)
        if folder is not None:
            folder.cleanup()

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the example (``optimize`` checked it is ``(N, C, H, W)``)."""
        chans, height, width = self.example.shape[1:]
        return chans, height, width

    def rounding_error(self, want: torch.Tensor) -> float:
        """How far the eager output ``want`` on the example is from float64 arithmetic
        (:func:`cnnzoo.parity.fp32_rounding_error`), measured once for all candidates."""
        if "rounding" not in self._memo:
            self._memo["rounding"] = fp32_rounding_error(self.model, self.example, want)
        return self._memo["rounding"]

    def folded(self) -> tuple[nn.Module, list[tuple[str, str]]]:
        """The model with BatchNorm folded (traced once, shared by both fused backends)."""
        if "folded" not in self._memo:
            self._memo["folded"] = fold_batchnorm(self.model, self.example, self.name)
        return self._memo["folded"]


@dataclass
class Built:
    """A backend ready to run.

    Attributes:
        run: batch → logits; called under ``torch.inference_mode`` with torch's threads set
            and a float32 CPU batch (for the CPU backends), unless ``runs_torch`` is False:
            then with any float batch, which it converts itself (``onnxrt.as_array``).
        note: what it does, in a few words (for ``describe()``).
        same_as: the backend this one is identical to here (``fused`` without anything to
            fold is ``eager``); ``auto`` does not time it twice.
        device: ``"cpu"``, or ``"cuda"`` for the GPU path (which moves inputs itself).
        exact: whether it must pass the parity check with eager (False for int8 and cuda).
        runs_torch: False for ONNX Runtime and OpenVINO, which compute on threads of their
            own: their calls skip torch's thread setting and inference mode, each worth ~0.1 ms
            of cold caches on a call that follows a pause.
    """

    run: Callable[[torch.Tensor], torch.Tensor]
    note: str
    same_as: str | None = None
    device: str = "cpu"
    exact: bool = True
    runs_torch: bool = True


def build_eager(ctx: Context) -> Built:
    return Built(ctx.model, "the model as it is, eval mode, torch.inference_mode")


def build_channels_last(ctx: Context) -> Built:
    return Built(_channels_last(copy.deepcopy(ctx.model)), "weights and inputs channels_last")


def build_fused(ctx: Context) -> Built:
    model, pairs = ctx.folded()
    same = None if pairs else "eager"
    return Built(model, f"BatchNorm folded into {len(pairs)} convolutions", same_as=same)


def build_fused_channels_last(ctx: Context) -> Built:
    model, pairs = ctx.folded()
    same = None if pairs else "channels_last"
    note = f"BatchNorm folded into {len(pairs)} convolutions, channels_last"
    return Built(_channels_last(copy.deepcopy(model)), note, same_as=same)


def _channels_last(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    model = model.to(memory_format=torch.channels_last)  # 4-D weights; the others stay
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def build_bf16(ctx: Context) -> Built:
    """bfloat16 autocast on the CPU with weights and inputs channels_last (oneDNN's bf16
    convolutions run on AVX512-BF16/AMX); the logits come back as float32. BatchNorm is folded
    first where the model traces (fewer bf16 round trips), otherwise the model runs as it is."""
    if not bf16_capable():
        raise InvalidArgumentError(NO_BF16.format(backend="bf16"))
    try:
        model, pairs = ctx.folded()
    except Exception:  # a model torch.export cannot trace still runs unfolded
        model, pairs = ctx.model, []
    net = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x.contiguous(memory_format=torch.channels_last))
        return y.float()

    note = f"torch autocast bf16, channels_last, BatchNorm folded into {len(pairs)} convolutions"
    return Built(run, note, exact=False)


def build_compile(ctx: Context) -> Built:
    """``torch.compile`` (inductor, default mode), compiled now on the example batch.

    The default mode, not ``max-autotune-no-cudagraphs``: on the CPU the autotuning mode mostly
    adds compile time (its GEMM templates matter on GPUs). A batch size other than the
    example's recompiles once on its first call, with the batch axis made dynamic.
    """
    compiled = torch.compile(ctx.model)
    start = time.perf_counter()
    with torch.inference_mode():
        compiled(ctx.example)  # the first call compiles
    seconds = time.perf_counter() - start
    note = (
        f"torch.compile (inductor, default mode), compiled in {seconds:.1f} s for batch "
        f"{len(ctx.example)}; another batch size recompiles once"
    )
    return Built(compiled, note)


def build_cuda(ctx: Context) -> Built:
    """The GPU path: the model on CUDA, channels_last, autocast to bf16 (or fp16).

    Inputs may live on any device; they are copied to the GPU and the float32 logits copied
    back to the input's device. cuDNN picks its fastest algorithms per shape (benchmark mode,
    inside each call only: :func:`cudnn_benchmark`).
    """
    check_cuda()
    dtype = CUDA_DTYPES[ctx.cuda_dtype]
    model = copy.deepcopy(ctx.model).to("cuda", memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks memory_format beside a device; Module.to takes both

    def run(x: torch.Tensor) -> torch.Tensor:
        gpu = x.to("cuda", non_blocking=True).contiguous(memory_format=torch.channels_last)
        with cudnn_benchmark(), torch.autocast("cuda", dtype=dtype):
            y = model(gpu)
        return y.float().to(x.device)

    name = torch.cuda.get_device_name()
    return Built(
        run, f"{name}, channels_last, autocast {ctx.cuda_dtype}", device="cuda", exact=False
    )


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN's benchmark mode on inside, the flag as it was on leaving (also on an error).

    Scoped to each call rather than set when the runner is built: a runner can live as long as
    the process (predict, the explorer), and the flag is process-wide, so leaving it on would
    change how every other convolution picks its algorithm — a trainer in the same process would
    stop being repeatable. Setting a Python flag twice a call costs nothing next to a GPU
    forward pass. Left off when the user asked for deterministic algorithms
    (``torch.use_deterministic_algorithms`` or ``cudnn.deterministic``): benchmark mode may
    pick a different algorithm from run to run.
    """
    cudnn = torch.backends.cudnn
    was = cudnn.benchmark
    if not (torch.are_deterministic_algorithms_enabled() or cudnn.deterministic):
        cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.benchmark = was


def check_cuda() -> None:
    if not torch.cuda.is_available():
        build = "a CUDA build" if torch.version.cuda else "a CPU-only build"
        raise InvalidArgumentError(
            f"backend 'cuda' needs a CUDA GPU, and none is usable here (torch {torch.__version__}"
            f" is {build}): choose a CPU backend such as auto, or run on a machine with a GPU."
        )
