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

import dataclasses
import functools
import json
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
from cnnzoo.checks import check_int, is_int
from cnnzoo.errors import DataError, ExportError, InputSizeError, InvalidArgumentError
from cnnzoo.extras import require
from cnnzoo.fileio import TMP_SUFFIX
from cnnzoo.models import get_spec
from cnnzoo.onnxrt import onnx_session, run_onnx
from cnnzoo.parity import ParityCheck, compare_outputs, fp32_rounding_error, model_device

if TYPE_CHECKING:
    from cnnzoo.data.preprocessing import Preprocessing

FORMATS = ("onnx", "torchscript")
ONNX_EXTRA = ("onnx", "onnxscript", "onnxruntime")
# The lowest opset the dynamo exporter implements natively: asked for less it converts down, and
# that fails on our graphs; the lowest gives the widest choice of runtimes (ONNX Runtime ≥ 1.14).
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"
METADATA_FILE = "cnnzoo.json"  # the TorchScript extra file holding the metadata
EXPORT_BATCH = 2  # torch.export specialises sizes 0 and 1: a batch of 1 would fix the axis
CHECK_BATCHES = (1, 3)  # both differ from EXPORT_BATCH, so they prove the batch axis is free


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
        require(*ONNX_EXTRA, needed_by="ONNX export")
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

    check_int("count", count)
    if input_size is not None and tuple(input_size) != tuple(pre.input_size):
        if input_size[0] != pre.input_size[0]:
            raise InvalidArgumentError(
                f"input_size {tuple(input_size)} has {input_size[0]} channels, the weights "
                f"{pre.input_size[0]}: export at {pre.input_size[0]} channels."
            )
        chans, height, width = input_size
        pre = dataclasses.replace(pre, input_size=(chans, height, width), resize=None, crop=None)
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
    if len(size) != 3 or not all(is_int(s) and s >= 1 for s in size):
        raise InvalidArgumentError(
            f"input_size must be three positive integers (C, H, W), got {input_size!r}."
        )
    return size


def _in_chans(model: nn.Module) -> int | None:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return first.in_channels
    shape = getattr(model, "input_shape", None)  # the MLP, which has no convolution
    return shape[0] if shape else None


def _check_inputs(
    model: nn.Module, name: str, size: tuple[int, int, int], real_inputs: Any
) -> None:
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
        assert program is not None  # with dynamo=True the exporter returns its program
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
    return x.to(model_device(model))


def _load_runner(fmt: str, path: Path, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """A function running the written file on a batch (tests replace it to inject faults)."""
    if fmt == "onnx":
        session = onnx_session(path, needed_by="Checking an ONNX export")
        return lambda x: run_onnx(session, x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.load(str(path), map_location=device)


def _parity_checks(
    model: nn.Module, tmp: Path, report: ExportReport, real_inputs: Any, seed: int
) -> list[ParityCheck]:
    runner = _load_runner(report.format, tmp, model_device(model))
    size = report.input_size
    inputs = [
        ("random", _random(b, size, seed + 1 + i, model)) for i, b in enumerate(CHECK_BATCHES)
    ]
    if real_inputs is not None:
        inputs.append(("real images", real_inputs.to(model_device(model), torch.float32)))
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
    (onnx,) = require("onnx", needed_by="Reading an ONNX file's metadata")

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {p.key: _json_or_text(p.value) for p in props}


def _first_line(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0][:300]


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:  # a property another tool wrote as plain text
        return value
