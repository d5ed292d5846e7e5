"""Export a model to ONNX or TorchScript, then prove the file computes what the model computes.

:func:`export_model` writes the file to a temporary name in the target folder, runs it (ONNX
Runtime on the CPU for ONNX, ``torch.jit.load`` for TorchScript) on random inputs at two batch
sizes other than the one exported with, and on real images when given, and compares each output
with the eager model's: the largest absolute difference must stay within ``1e-4 · max(1, max
|y|)`` and every row's top-1 class must agree (DESIGN.md §4, different engines). Only then is the
file renamed over the target, so a failed check leaves what was there.

ONNX goes through torch's dynamo exporter at opset 18 with a dynamic batch axis (the older
TorchScript-based exporter fails on adaptive pooling at small inputs); TorchScript files are
traced. Both carry the model name, input size, mean/std and class names (ONNX
``metadata_props``; a ``cnnzoo.json`` extra file), which :func:`read_metadata` reads back.
docs/export.md says how to run the files and why these choices.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnzoo.analysis import check_input
from cnnzoo.errors import DataError, ExportError, InputSizeError, InvalidArgumentError
from cnnzoo.fileio import TMP_SUFFIX
from cnnzoo.registry import get_spec

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

FORMATS = ("onnx", "torchscript")
ONNX_EXTRA = ("onnx", "onnxscript", "onnxruntime")
# The lowest opset the dynamo exporter implements natively: asked for less it converts down, and
# that fails on our graphs; the lowest gives the widest choice of runtimes (ONNX Runtime ≥ 1.14).
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"
METADATA_FILE = "cnnzoo.json"  # the TorchScript extra file holding the metadata
RTOL = 1e-4  # different engines: 1e-4 · max(1, max |y|) and the same top-1 (DESIGN.md §4)
# ... unless the model's own fp32 forward is further than that from exact arithmetic. Two fp32
# evaluations each within e of the exact value differ by up to 2e; 4e still rejects an engine
# more than 3× less exact than eager. (A trained network with near-zero BatchNorm variances can
# amplify rounding 300-fold on inputs unlike its data: eager itself then misses float64 by
# 1e-3 of max |y|, and so does every other correct engine.)
ROUNDING_FACTOR = 4
EXPORT_BATCH = 2  # torch.export specialises sizes 0 and 1: a batch of 1 would fix the axis
CHECK_BATCHES = (1, 3)  # both differ from EXPORT_BATCH, so they prove the batch axis is free


@dataclass
class ParityCheck:
    """One comparison of the file's outputs with the eager model's.

    Attributes:
        name: what was fed (``"random"`` or ``"real images"``).
        batch: the batch size.
        max_abs_diff: largest absolute difference between the two outputs.
        tolerance: ``1e-4 · max(1, max |y|)``, ``y`` the eager output, or
            ``ROUNDING_FACTOR × rounding_error`` where that is larger.
        top1_agreement: fraction of rows whose top-1 class is the same in both.
        rounding_error: how far the eager fp32 output is from the model run in float64
            (measured only when the difference exceeds the first tolerance; else ``None``).
    """

    name: str
    batch: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    rounding_error: float | None = None

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.top1_agreement == 1.0  # NaN fails

    def line(self) -> str:
        agree = round(self.top1_agreement * self.batch)
        rounding = ""
        if self.rounding_error is not None:
            rounding = f", eager's own fp32 rounding error {self.rounding_error:.2e}"
        return (
            f"{self.name}, batch {self.batch}: max |Δ| {self.max_abs_diff:.2e} (tolerance "
            f"{self.tolerance:.2e}{rounding}), top-1 {agree}/{self.batch} agree"
        )


def compare_outputs(
    name: str, want: torch.Tensor, got: Any, rounding_error: Callable[[], float]
) -> ParityCheck:
    """Check ``got`` (another engine's output) against ``want`` (the model's, fp32, eager):
    max |Δ| within ``1e-4 · max(1, max |want|)`` and the same top-1 (DESIGN.md §4); a wrong
    shape fails. Where the difference exceeds that, ``rounding_error()`` is asked how far
    ``want`` is from exact arithmetic (:func:`fp32_rounding_error`), and the tolerance becomes
    ``ROUNDING_FACTOR`` times that if it is larger: an engine is not blamed for differing from
    eager by what eager itself misses the exact value by."""
    want = want.detach().float().cpu()
    tolerance = RTOL * max(1.0, want.abs().max().item())
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return ParityCheck(name, len(want), float("inf"), tolerance, 0.0)
    got = got.detach().float().cpu()
    check = ParityCheck(
        name,
        len(want),
        (got - want).abs().max().item(),
        tolerance,
        (got.argmax(1) == want.argmax(1)).float().mean().item(),
    )
    if check.max_abs_diff > tolerance and math.isfinite(check.max_abs_diff):
        check.rounding_error = rounding_error()
        check.tolerance = max(tolerance, ROUNDING_FACTOR * check.rounding_error)
    return check


def fp32_rounding_error(model: nn.Module, x: torch.Tensor, want: torch.Tensor) -> float:
    """max |want − model(x) in float64|: how far the model's fp32 output ``want`` is from exact
    arithmetic (a float64 copy of the model, the user's left as it is)."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        reference = exact(x.detach().to(_device(model), torch.float64))
    return (want.double() - reference.detach().cpu()).abs().max().item()


@dataclass
class ExportReport:
    """What an export wrote and how its checks went.

    Attributes:
        path: the file written.
        format: ``"onnx"`` or ``"torchscript"``.
        model: the registry name, or the class name when the name was not given.
        input_size: ``(C, H, W)`` of one input; the batch axis is free.
        file_bytes: size of the file.
        export_seconds: time to export or trace the model and write the file.
        check_seconds: time to load the file and run the checks.
        checks: the parity checks, in the order run.
        real_images: where the real images checked came from (:class:`CheckImages`), when
            :func:`export_model` was given them that way.
    """

    path: str
    format: str
    model: str
    input_size: tuple[int, int, int]
    file_bytes: int = 0
    export_seconds: float = 0.0
    check_seconds: float = 0.0
    checks: list[ParityCheck] = field(default_factory=list)
    real_images: str | None = None

    def lines(self) -> list[str]:
        """A header line, then one line per check (and where the real images came from)."""
        kind = f"ONNX opset {ONNX_OPSET}" if self.format == "onnx" else "TorchScript (traced)"
        out = [
            f"exported {self.model} ({'×'.join(map(str, self.input_size))}, dynamic batch) to "
            f"{self.path}: {kind}, {self.file_bytes / 1e6:.1f} MB, {self.export_seconds:.1f} s; "
            f"checked in {self.check_seconds:.1f} s"
        ]
        out += [f"  check {c.line()}: ok" for c in self.checks]
        if self.real_images:
            out.append(f"  real images: {self.real_images}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {**dataclasses.asdict(self), "input_size": list(self.input_size)}


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    *,
    input_size: tuple[int, int, int] | None = None,
    real_inputs: torch.Tensor | CheckImages | None = None,
    seed: int = 0,
    model_name: str | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` and check the file against the model.

    Args:
        model: the network; exported in eval mode, its mode given back afterwards.
        path: the file to write; a file already there is replaced only by one that passed.
        fmt: ``"onnx"`` or ``"torchscript"``.
        input_size: ``(C, H, W)`` to export at; ``model.pretrained_cfg.input_size`` when
            ``None``, else the registered default size of ``model_name``.
        real_inputs: preprocessed images ``(N, C, H, W)`` to check on besides random inputs,
            or :func:`check_images`' choice of them (its description goes into the report).
        seed: seed of the random inputs.
        model_name: the registry name, written into the file (``load_weights`` gives it in its
            report); the class name stands in for it in the report when ``None``.

    Returns:
        The :class:`ExportReport`.

    Raises:
        InvalidArgumentError: an unknown format, no input size to be had, a folder that does
            not exist, or ``real_inputs`` of the wrong shape.
        UnknownModelError: ``model_name`` is not registered.
        InputSizeError: the model cannot take ``input_size`` (found before exporting).
        ExportError: the ONNX extra is missing, the exporter failed, or a parity check failed
            (one line: the check, the difference and the tolerance).
    """
    fmt = fmt.lower() if isinstance(fmt, str) else fmt
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown export format {fmt!r}: choose {', '.join(FORMATS)}.")
    if fmt == "onnx":
        _require(ONNX_EXTRA)
    path = Path(path)
    if not path.parent.is_dir() or path.is_dir():
        why = (
            "is a folder" if path.is_dir() else f"needs the folder {path.parent}, which is missing"
        )
        raise InvalidArgumentError(f"cannot write {path}: it {why}; give another path.")
    if model_name is not None:
        get_spec(model_name)  # an unknown name fails here, with close matches
    cfg = getattr(model, "pretrained_cfg", None)
    name = model_name or type(model).__name__
    report = ExportReport(str(path), fmt, name, _input_size(model, input_size, cfg, model_name))
    if isinstance(real_inputs, CheckImages):
        report.real_images, real_inputs = real_inputs.source, real_inputs.images
    was_training = model.training
    model.eval()
    try:
        _check_inputs(model, name, report.input_size, real_inputs)
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")  # as cnnzoo.fileio
        try:
            start = time.perf_counter()
            _write(model, tmp, report, seed, _metadata(model, model_name, report.input_size, cfg))
            _fsync(tmp)
            report.file_bytes = tmp.stat().st_size
            report.export_seconds = time.perf_counter() - start
            report.checks = _parity_checks(model, tmp, report, real_inputs, seed)
            report.check_seconds = time.perf_counter() - start - report.export_seconds
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(path.parent)  # so that the rename survives a power cut too
    finally:
        model.train(was_training)
    return report


# --- real images for the checks --------------------------------------------------------------


@dataclass(frozen=True)
class CheckImages:
    """Real images for :func:`export_model`'s parity check, and where they came from.

    Attributes:
        images: ``(N, C, H, W)`` float32, prepared as the weights ask.
        source: one line: how many, from which dataset, prepared how.
    """

    images: torch.Tensor
    source: str


def check_images(
    pre: Preprocessing,
    dataset: str | None = None,
    *,
    root: str | Path | None = None,
    count: int = 32,
    input_size: tuple[int, int, int] | None = None,
) -> CheckImages:
    """Validation images of a dataset, prepared by the weights' :class:`Preprocessing` (the one
    ``eval`` and ``predict`` use), spread evenly over the split (which is ordered by class).

    Args:
        pre: the weights' preprocessing (``model.pretrained_cfg``).
        dataset: as for :func:`cnnzoo.data.load_dataset`; ``None`` takes the dataset the weights
            were trained on (``pre.dataset``), or the built-in digits when they name none or it
            cannot be read here (the description says why).
        root: folder holding the dataset files.
        count: how many images (fewer when the split has fewer).
        input_size: ``(C, H, W)`` when exporting at another size than the weights': the images
            are then resized straight to it (the weights' resize rule is for their own size).

    Raises:
        InvalidArgumentError: ``count`` below 1, or ``input_size`` with other channels than the
            weights'.
        DataError: ``dataset`` given and not readable.
    """
    from cnnzoo.data import load_dataset

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgumentError(f"count must be a whole number of at least 1, got {count!r}.")
    if input_size is not None and tuple(input_size) != tuple(pre.input_size):
        if input_size[0] != pre.input_size[0]:
            raise InvalidArgumentError(
                f"input_size {tuple(input_size)} has {input_size[0]} channels, the weights "
                f"{pre.input_size[0]}: export at {pre.input_size[0]} channels."
            )
        pre = dataclasses.replace(pre, input_size=tuple(input_size), resize=None, crop=None)
    why = ""
    if dataset is None:
        dataset, why = "digits", " (the weights name no dataset)"
        if pre.dataset:
            try:
                data = load_dataset(pre.dataset, root=root, preprocessing=pre)
                dataset, why = pre.dataset, ""
            except DataError as err:
                why = f" (the weights' dataset {pre.dataset} cannot be read here: {err})"
        if why:
            data = load_dataset("digits", preprocessing=pre)
    else:
        data = load_dataset(dataset, root=root, preprocessing=pre)
    val = data.val
    n = min(count, len(val))
    picks = [i * len(val) // n for i in range(n)]
    source = (
        f"{n} validation images of {dataset}{why}, prepared as the weights ask: "
        f"{pre.describe_steps()}"
    )
    return CheckImages(torch.stack([val[i][0] for i in picks]), source)


# --- arguments -------------------------------------------------------------------------------


def _require(modules: tuple[str, ...]) -> None:
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(
            "ONNX export needs the onnx extra: pip install 'cnnzoo[onnx]' "
            f"(missing: {', '.join(missing)})"
        )


def _input_size(
    model: nn.Module, input_size: Any, cfg: Any, model_name: str | None
) -> tuple[int, int, int]:
    if input_size is None and cfg is not None:
        input_size = cfg.input_size
    if input_size is None and model_name is not None:
        default = get_spec(model_name).input_size
        input_size = (_in_chans(model) or default[0], *default[1:])
    if input_size is None:
        raise InvalidArgumentError(
            f"give input_size (C, H, W) to export {type(model).__name__}: it has no "
            "pretrained_cfg and no model_name to take the size from."
        )
    size = tuple(input_size)
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise InvalidArgumentError(
            f"input_size must be three positive integers (C, H, W), got {input_size!r}."
        )
    return size  # type: ignore[return-value]


def _in_chans(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return first.in_channels
    shape = getattr(model, "input_shape", None)  # the MLP, which has no convolution
    return shape[0] if shape else None


def _check_inputs(model: nn.Module, name: str, size: tuple[int, ...], real_inputs: Any) -> None:
    chans = _in_chans(model)
    if chans is not None and chans != size[0]:
        raise InputSizeError(f"{name} takes {chans}-channel inputs, not {size[0]}: give C={chans}.")
    try:
        check_input(model, size)
    except InputSizeError as err:
        cls = type(model).__name__
        if not str(err).startswith(cls):
            raise
        raise InputSizeError(name + str(err)[len(cls) :]) from None  # the name the user knows
    if real_inputs is not None and not (
        isinstance(real_inputs, torch.Tensor)
        and real_inputs.is_floating_point()
        and real_inputs.dim() == 4
        and real_inputs.shape[0] > 0
        and tuple(real_inputs.shape[1:]) == size
    ):
        got = tuple(real_inputs.shape) if isinstance(real_inputs, torch.Tensor) else real_inputs
        want = ", ".join(map(str, size))
        raise InvalidArgumentError(
            f"real_inputs must be preprocessed float images of shape (N, {want}), got {got!r}."
        )


def _metadata(
    model: nn.Module, model_name: str | None, size: tuple[int, ...], cfg: Any
) -> dict[str, Any]:
    from cnnzoo import __version__

    meta: dict[str, Any] = {
        "model": model_name,
        "architecture": type(model).__name__,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_size": list(size),
        "num_classes": getattr(model, "num_classes", None),
        "cnnzoo_version": __version__,
    }
    if cfg is not None:
        names = cfg.class_names
        meta.update(
            mean=list(cfg.mean),
            std=list(cfg.std),
            channel_order=cfg.channel_order,
            resize=cfg.resize,
            crop=cfg.crop,
            interpolation=cfg.interpolation,
            class_names=None if names is None else list(names),
            preprocessing=cfg.describe(),
        )
    return meta


# --- writing ---------------------------------------------------------------------------------


def _write(
    model: nn.Module, tmp: Path, report: ExportReport, seed: int, meta: dict[str, Any]
) -> None:
    example = _random(EXPORT_BATCH, report.input_size, seed, model)
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"{report.model} returns a {type(out).__name__} in eval mode, not one tensor of "
            "logits: export needs a model whose forward returns one tensor."
        )
    if report.format == "onnx":
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
                report=False,
            )
        except Exception as err:  # the exporter's own types vary; the cause stays chained
            raise ExportError(
                f"torch.onnx.export failed on {report.model}: {_first_line(err)}"
            ) from err
        program.model.metadata_props.update({k: json.dumps(v) for k, v in meta.items()})
        program.save(tmp, external_data=False)  # one self-contained file: every model < 2 GB
        return
    with warnings.catch_warnings():
        # torch.jit warns it is deprecated (docs/export.md: why we still offer it); the
        # TracerWarnings flag forward's input-size checks, constants at the fixed (H, W). The
        # checks at other batch sizes are what show that the trace holds.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- checking --------------------------------------------------------------------------------


def _random(batch: int, size: tuple[int, ...], seed: int, model: nn.Module) -> torch.Tensor:
    # Standard normal: about what normalised images look like.
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed))
    return x.to(_device(model))


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _load_runner(fmt: str, path: Path, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """A function running the written file on a batch (tests replace it to inject faults)."""
    if fmt == "onnx":
        session = onnx_session(path)
        return lambda x: run_onnx(session, x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.load(str(path), map_location=device)


def _parity_checks(
    model: nn.Module, tmp: Path, report: ExportReport, real_inputs: Any, seed: int
) -> list[ParityCheck]:
    runner = _load_runner(report.format, tmp, _device(model))
    size = report.input_size
    inputs = [
        ("random", _random(b, size, seed + 1 + i, model)) for i, b in enumerate(CHECK_BATCHES)
    ]
    if real_inputs is not None:
        inputs.append(("real images", real_inputs.to(_device(model), torch.float32)))
    checks = []
    for label, x in inputs:
        where = f"{report.format} check {label}, batch {len(x)}"
        with torch.no_grad():
            want = model(x).float().cpu()
            try:
                got = runner(x)
            except Exception as err:  # e.g. a batch axis that is not free after all
                raise ExportError(
                    f"{where}: the file does not run ({_first_line(err)}); {report.path} was "
                    "left as it was."
                ) from err
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ExportError(
                f"{where}: the file returned {shape}, the model {tuple(want.shape)}; "
                f"{report.path} was left as it was."
            )
        exact = functools.partial(fp32_rounding_error, model, x, want)
        check = compare_outputs(label, want, got, exact)
        checks.append(check)
        if not check.passed:
            raise ExportError(
                f"{report.format} check {check.line()}: FAILED; {report.path} was left as it was."
            )
    return checks


# --- using the files -------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session for ``path`` on the CPU (``CPUExecutionProvider`` only), its
    worker threads spinning during a run and stopped as soon as it returns.

    Args:
        path: an ONNX file.
        threads: intra-op threads; ``torch.get_num_threads()`` when ``None``, so that ONNX
            Runtime and eager torch are measured on equal terms.

    Raises:
        ExportError: onnxruntime is not installed.
        InvalidArgumentError: ``threads`` is not a positive integer.
    """
    _require(("onnxruntime",))
    import onnxruntime

    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # one graph at a time: the intra-op threads do the work
    options.log_severity_level = 3  # errors only; a failure still raises
    # Workers spin between the operators of a run (waking a sleeping thread for each of a few
    # hundred small operators costs 5-7% on EfficientNet-B0 and DenseNet-121 at 2 threads), but
    # stop the moment the run returns: by default they would spin on for a while and take the
    # cores from whatever runs next (measured: the next PyTorch call 2x slower).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(session: Any, x: torch.Tensor) -> torch.Tensor:
    """Run a one-input, one-output session on the batch ``x``; the output as a tensor."""
    array = x.detach().to("cpu", torch.float32).contiguous().numpy()
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: array})[0])


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported ONNX or TorchScript file (``{}`` when it has none).

    The format is told by the content: a TorchScript file is a zip archive.
    """
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    if is_zip:
        extra = {METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[METADATA_FILE] or "{}")
    _require(("onnx",))
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {p.key: _json_or_text(p.value) for p in props}


def _first_line(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0][:300]


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:  # a property another tool wrote as plain text
        return value
