"""Fast inference: one call turns a model into the fastest :class:`Runner` this machine has.

``optimize(model, backend, precision=..., example_input=...)`` builds one backend (or, with
``"auto"``, measures the candidates of the asked precision and keeps the fastest) on an
eval-mode copy of the model and returns a callable runner. fp32 backends are checked against
eager on the example input (within ``1e-4 · max(1, max |y|)``, same top-1); bf16 and int8 ones
are used only when asked for, and report their measured change against fp32 (top-1 agreement,
max |Δlogit|) on the calibration images, or the example input when there are none.
docs/inference.md says what each backend does and which precision to choose when.

Backends (:data:`cnnzoo.choices.ENGINES`): fp32 ``eager``, ``channels_last``, ``fused``
(BatchNorm folded into the convolutions), ``fused_channels_last``, ``onnxruntime``, ``openvino``,
``compile`` (torch.compile); bf16 ``bf16`` (torch autocast), ``openvino_bf16``; int8 ``int8``
(ONNX Runtime static quantization), ``openvino_int8`` (NNCF); ``cuda`` (GPU, bf16/fp16
autocast); and ``auto``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cnnzoo.choices import BACKENDS, ENGINE_PRECISION, PRECISIONS
from cnnzoo.errors import ExportError, InvalidArgumentError
from cnnzoo.inference import auto
from cnnzoo.inference.backends import (
    CUDA_DTYPES,
    NEEDS_CALIBRATION,
    Built,
    Context,
    bf16_capable,
    build_bf16,
    build_channels_last,
    build_compile,
    build_cuda,
    build_eager,
    build_fused,
    build_fused_channels_last,
    check_cuda,
)
from cnnzoo.inference.fold import fold_batchnorm
from cnnzoo.inference.openvino import (
    build_openvino,
    build_openvino_bf16,
    build_openvino_int8,
)
from cnnzoo.inference.ort import (
    CALIBRATION_IMAGES,
    build_int8,
    build_onnxruntime,
    calibration_images,
    ort_session,
)
from cnnzoo.inference.runner import (
    Accuracy,
    Candidate,
    Runner,
    RunnerModule,
    agreement,
    check_images,
    check_threads,
    torch_threads,
)
from cnnzoo.models import get_spec
from cnnzoo.parity import compare_outputs

__all__ = [
    "AUTO_CANDIDATES",
    "AUTO_REDUCED",
    "BACKENDS",
    "CALIBRATION_IMAGES",
    "PRECISIONS",
    "Accuracy",
    "Candidate",
    "Runner",
    "RunnerModule",
    "agreement",
    "calibration_images",
    "fold_batchnorm",
    "optimize",
    "ort_session",
]

BUILDERS: dict[str, Callable[[Context], Built]] = {
    "eager": build_eager,
    "channels_last": build_channels_last,
    "fused": build_fused,
    "fused_channels_last": build_fused_channels_last,
    "onnxruntime": build_onnxruntime,
    "openvino": build_openvino,
    "compile": build_compile,
    "bf16": build_bf16,
    "openvino_bf16": build_openvino_bf16,
    "int8": build_int8,
    "openvino_int8": build_openvino_int8,
    "cuda": build_cuda,
}
# BACKENDS (auto + ENGINES) come from cnnzoo.choices (the command line lists them without importing
# torch); tests/test_startup.py checks that ENGINES names exactly these builders.
# The cheap fp32 ones: compile costs 15-20 s per model to try, and cuda is another device.
# A candidate whose extra is not installed (onnxruntime, openvino) is dropped with the reason.
AUTO_CANDIDATES = (
    "eager", "channels_last", "fused", "fused_channels_last", "onnxruntime", "openvino",
)  # fmt: skip
# What auto measures when the user asks for reduced precision. A precision is the lowest
# arithmetic the user allows, so int8 also measures the bf16 engines: on this AMX CPU the
# depthwise networks ran faster in bf16 than fully quantized (EfficientNet-B0 1.3-1.5x,
# MobileNetV2 1.1-1.2x at 224 px) and agreed better with fp32, and where int8 pays (ResNet,
# GoogLeNet, DenseNet: 1.3-1.9x bf16) it is still picked. bf16 does not measure fp32: on a CPU
# with bf16 it is never the faster, and on one without, auto falls back to fp32 (optimize).
# A bf16 engine within 5% of the fastest int8 one is kept instead (_prefer_higher_precision).
AUTO_REDUCED = {
    "bf16": ("openvino_bf16", "bf16"),
    "int8": ("openvino_int8", "int8", "openvino_bf16", "bf16"),
}
CHECKED_IMAGES = 256  # at most this many calibration images measure a reduced runner's change


def optimize(
    model: nn.Module,
    backend: str = "auto",
    *,
    precision: str | None = None,
    example_input: torch.Tensor,
    threads: int | None = None,
    calibration: torch.Tensor | None = None,
    cache_dir: str | Path | None = None,
    model_name: str | None = None,
    cuda_dtype: str = "bf16",
    onnx_file: str | Path | None = None,
) -> Runner:
    """Make ``model`` ready for fast inference with ``backend``.

    The user's model is left as it is (mode and weights): every backend works on an eval-mode
    copy, so the runner is a snapshot of the weights at this call.

    Args:
        model: the network; its forward must return one tensor of logits in eval mode.
        backend: one of :data:`BACKENDS`; ``"auto"`` measures the candidates of ``precision``
            (:data:`AUTO_CANDIDATES` for fp32, :data:`AUTO_REDUCED` otherwise) for this model,
            input shape, batch size and thread count and keeps the fastest (for fp32, of those
            that pass the parity check), remembering its choice in ``cache_dir``.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``; ``None`` means the explicit
            backend's own, or fp32 for ``auto``. For ``auto`` it is the lowest arithmetic
            allowed: ``"int8"`` measures the bf16 engines beside the int8 ones and keeps the
            fastest, or bf16 when it is within 5% of int8 (``runner.precision`` says which
            it runs, its note why). With ``auto`` and ``"bf16"`` on a CPU without bf16
            instructions, auto falls back to fp32 and the runner's note says so.
        example_input: a batch ``(N, C, H, W)`` like those the runner will get: it fixes
            ``(C, H, W)``, is what ``auto`` times (so ``N`` is the batch size it optimizes for)
            and what the parity check runs on.
        threads: intra-op threads for torch (set during setup and each call, restored after)
            and for ONNX Runtime; ``torch.get_num_threads()`` when ``None``.
        calibration: preprocessed real images ``(M, C, H, W)``: required for int8 (a few
            hundred from the training set are plenty); for bf16 and int8 runners the first
            256 also measure the change against fp32.
        cache_dir: where ``auto`` keeps its choices (under ``inference/``); ``$CNNZOO_CACHE``
            or ``~/.cache/cnnzoo`` when ``None``.
        model_name: the registry name (``load_weights`` reports it); names the cache entry and
            goes into the ONNX file. The class name stands in when ``None``.
        cuda_dtype: ``"bf16"`` or ``"fp16"``: the autocast type of the ``cuda`` backend.
        onnx_file: an ONNX file of this model with a free batch axis (``cnnzoo export``'s),
            for the ONNX Runtime and OpenVINO backends to load instead of exporting or
            converting the model again (what takes most of their setup); every backend is still
            checked against the model. ``None``: exported when first needed, once per call.

    Returns:
        A :class:`Runner`: ``runner(x)`` gives the logits; ``runner.describe()`` one line on
        what it is and, for ``auto``, what was measured.

    Raises:
        InvalidArgumentError: an unknown backend or precision, a backend of another
            precision than the one asked, bad ``threads``, ``example_input`` or
            ``calibration``, int8 without calibration images, an explicit bf16 backend on a CPU
            without bf16, ``cuda`` without a GPU, or ``fused`` on a model ``torch.export``
            cannot trace.
        UnknownModelError: ``model_name`` is not registered.
        InputSizeError: the model cannot take the example's size.
        ExportError: the ONNX or OpenVINO extra is missing, the export failed, or the backend
            does not compute what the model computes (parity failure, one line with the numbers).
    """
    start = time.perf_counter()
    precision = _precision(backend, precision)
    fallback = ""
    if backend == "auto" and precision == "bf16" and not bf16_capable():
        precision = "fp32"
        fallback = "this CPU has no bfloat16 instructions (avx512_bf16, AMX): fp32 instead"
    ctx = _context(
        model, backend, precision, example_input, threads, calibration, model_name, cuda_dtype
    )
    if onnx_file is not None:
        ctx.onnx_file = _existing_file("onnx_file", onnx_file)
    try:
        runner = _optimize(ctx, backend, precision, cache_dir)
    finally:
        ctx.close()  # the export's folder: the sessions hold what they loaded
    if fallback:
        runner.note += f"; {fallback}"
    runner.setup_seconds = time.perf_counter() - start
    return runner


def _existing_file(what: str, path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise InvalidArgumentError(f"{what} {path} {why}: give the path of an ONNX file.")
    return path


def _optimize(ctx: Context, backend: str, precision: str, cache_dir: str | Path | None) -> Runner:
    with torch_threads(ctx.threads):
        with torch.inference_mode():
            want = ctx.model(ctx.example)
        if not isinstance(want, torch.Tensor) or want.dim() != 2:
            what = tuple(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__
            raise InvalidArgumentError(
                f"{ctx.name} returns {what} in eval mode: optimize needs a model whose forward "
                "returns one (N, classes) tensor of logits."
            )
        if backend == "auto":
            cache = Path(cache_dir) if cache_dir is not None else auto.default_cache_dir()
            names = AUTO_CANDIDATES if precision == "fp32" else AUTO_REDUCED[precision]
            return _auto(ctx, want, cache, names, precision)
        return _build(backend, ctx, want)[0]


def _precision(backend: str, precision: str | None) -> str:
    """The precision asked for, checked against the backend; the backend's own when ``None``."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}: choose {', '.join(BACKENDS)}.")
    if precision is None:
        precision = "fp32" if backend == "auto" else ENGINE_PRECISION[backend]
    elif precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}."
        )
    elif backend not in ("auto", "cuda") and ENGINE_PRECISION[backend] != precision:
        same = [n for n, p in ENGINE_PRECISION.items() if p == precision and n != "cuda"]
        raise InvalidArgumentError(
            f"backend {backend!r} runs in {ENGINE_PRECISION[backend]}, not {precision}: use "
            f"backend 'auto' or one of {', '.join(same)} with precision {precision!r}."
        )
    return precision


def _context(
    model: nn.Module,
    backend: str,
    precision: str,
    example_input: torch.Tensor,
    threads: int | None,
    calibration: torch.Tensor | None,
    model_name: str | None,
    cuda_dtype: str,
) -> Context:
    """:func:`optimize`'s arguments checked, and what every backend builds from: an eval-mode
    CPU copy of the model, the example in fp32, the calibration images."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model must be a torch nn.Module, got {type(model).__name__}.")
    threads = check_threads(threads)
    example = check_images(
        "example_input",
        example_input,
        fix="give a batch like those you will run, e.g. torch.randn(8, C, H, W)",
    )
    size = tuple(example.shape[1:])
    if precision == "int8" and calibration is None:
        what = "precision 'int8'" if backend == "auto" else f"backend {backend!r}"
        shape = f"(M, {', '.join(map(str, size))})"
        raise InvalidArgumentError(NEEDS_CALIBRATION.format(what=what, shape=shape))
    if calibration is not None:
        calibration = check_images(
            "calibration", calibration, size, fix="give images prepared like example_input"
        ).detach()
    if backend == "cuda":
        check_cuda()
    if cuda_dtype not in CUDA_DTYPES:
        raise InvalidArgumentError(
            f"cuda_dtype must be {' or '.join(CUDA_DTYPES)}, got {cuda_dtype!r}."
        )
    if model_name is not None:
        get_spec(model_name)  # an unknown name fails here, with close matches
    return Context(
        copy.deepcopy(model).to("cpu").eval(),
        example.detach().to("cpu", torch.float32),
        threads,
        model_name or type(model).__name__,
        model_name,
        calibration,
        cuda_dtype,
    )


def _build(name: str, ctx: Context, want: torch.Tensor) -> tuple[Runner, str | None]:
    """Build one backend and check it on the example; the runner and what it is the same as."""
    start = time.perf_counter()
    built = BUILDERS[name](ctx)
    runner = Runner(
        name,
        ctx.threads,
        ctx.input_size,
        built.run,
        built.device,
        len(ctx.example),
        note=built.note,
        runs_torch=built.runs_torch,
    )
    got = runner(ctx.example)
    if built.exact:
        runner.check = compare_outputs(name, want, got, lambda: ctx.rounding_error(want))
        if not runner.check.passed:
            raise ExportError(
                f"backend {name!r} does not compute what {ctx.name} computes on the example "
                f"input ({runner.check.line()}): use another backend."
            )
    else:
        runner.precision = ctx.cuda_dtype if name == "cuda" else ENGINE_PRECISION[name]
        runner.accuracy = _accuracy(runner, ctx)
    runner.setup_seconds = time.perf_counter() - start
    return runner, built.same_as


def _accuracy(runner: Runner, ctx: Context) -> Accuracy:
    """The reduced-precision runner against the fp32 model on real images where there are
    some (the calibration images), else on the example input."""
    if ctx.calibration is not None:
        images, source = ctx.calibration[:CHECKED_IMAGES], "calibration images"
    else:
        images, source = ctx.example, "example inputs (no real images given)"
    top1, diff = agreement(runner, ctx.model, images)
    return Accuracy(len(images), source, top1, diff)


def _auto(
    ctx: Context, want: torch.Tensor, cache_dir: Path, names: tuple[str, ...], precision: str
) -> Runner:
    key = auto.cache_key(ctx.model, ctx.name, ctx.example, ctx.threads, names)
    path = auto.cache_file(cache_dir, key)
    entry = auto.read_cache(path, key)
    if entry is not None:
        try:
            runner = _build(entry["backend"], ctx, want)[0]
        except Exception:  # e.g. it fails its check now: measure again and overwrite
            pass
        else:
            runner.chosen_by, runner.cache_file = "auto (cached)", path
            runner.measurements = auto.cached_candidates(entry)
            runner.note += _why_higher_precision(runner, precision)
            return runner
    candidates: list[Candidate] = []
    runners: dict[str, Runner] = {}
    for name in names:
        start = time.perf_counter()
        try:
            runner, same_as = _build(name, ctx, want)
        except Exception as err:  # any failure only drops the candidate; the reason is kept
            reason = (str(err).strip() or type(err).__name__).splitlines()[0][:200]
            candidates.append(Candidate(name, None, time.perf_counter() - start, reason))
            continue
        if same_as in runners:
            candidates.append(Candidate(name, None, runner.setup_seconds, f"same as {same_as}"))
            continue
        runners[name] = runner
        candidates.append(Candidate(name, None, runner.setup_seconds))
    if not runners:  # only when eager itself is not a candidate
        reasons = "; ".join(f"{c.name}: {c.error}" for c in candidates)
        raise ExportError(f"no backend for {ctx.name} passed its check ({reasons}).")
    medians = auto.measure(runners, ctx.example)
    for candidate in candidates:
        if candidate.name in medians:
            candidate.median_ms = medians[candidate.name] * 1e3
    best = auto.fastest({name: medians[name] for name in runners})
    best = _prefer_higher_precision(best, medians, precision)
    chosen = runners[best]
    chosen.chosen_by, chosen.measurements, chosen.cache_file = "auto", candidates, path
    chosen.note += _why_higher_precision(chosen, precision)
    problem = auto.write_cache(path, key, best, candidates)
    if problem:
        chosen.note += f"; {problem}"
    return chosen


def _prefer_higher_precision(best: str, medians: dict[str, float], asked: str) -> str:
    """``best``, or the fastest engine of a higher precision when it is within
    :data:`auto.RUNOFF_MARGIN` of it (int8 asked, bf16 as fast): it changes fewer predictions
    (on three converged mobile networks int8 flipped 0.3-1.4% of the images, bf16 0-0.3%), and
    5% is what auto cannot tell apart anyway."""
    higher = [n for n in medians if ENGINE_PRECISION[n] != asked]
    if ENGINE_PRECISION[best] != asked or not higher:
        return best
    near = min(higher, key=lambda n: medians[n])
    return near if medians[near] <= medians[best] * (1 + auto.RUNOFF_MARGIN) else best


def _why_higher_precision(chosen: Runner, asked: str) -> str:
    """Why ``auto`` runs in a higher precision than the one asked (int8 asked, a bf16 engine
    faster or as fast): the note's addition naming both times, or ``""``."""
    if chosen.precision == asked:
        return ""
    timed = [c for c in chosen.measurements if c.median_ms is not None]
    lower = [c for c in timed if ENGINE_PRECISION[c.name] == asked]
    mine = next((c for c in timed if c.name == chosen.backend), None)
    if not lower or mine is None:
        return f"; no {asked} engine ran here, so {chosen.precision}"
    best = min(lower, key=lambda c: c.median_ms or 0.0)
    mine_ms, best_ms = mine.median_ms or 0.0, best.median_ms or 0.0
    how = "faster than" if mine_ms < best_ms else f"as fast as (within {auto.RUNOFF_MARGIN:.0%})"
    return (
        f"; {chosen.precision} ({mine_ms:.3g} ms) ran {how} {asked} ({best.name} "
        f"{best_ms:.3g} ms), and {asked} allows it"
    )
