"""What :func:`cnnzoo.inference.optimize` returns (:class:`Runner`), and the checks every backend
shares: arguments, top-1 agreement, the thread count. (The parity check against eager is
:func:`cnnzoo.parity.compare_outputs`, shared with the export's own checks.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.checks import check_int, is_int
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.parity import ParityCheck


@dataclass
class Candidate:
    """One backend as ``auto`` saw it.

    Attributes:
        name: the backend.
        median_ms: median time of one call in milliseconds; ``None`` when not timed.
        setup_seconds: time to build it and run its parity check.
        error: why it was not timed (a failed build or parity check, or nothing of its own to
            add); ``None`` for a timed candidate.
    """

    name: str
    median_ms: float | None = None
    setup_seconds: float = 0.0
    error: str | None = None

    def text(self) -> str:
        return f"{self.name} {self.median_ms:.3g} ms" if self.error is None else self.error


@dataclass
class Accuracy:
    """A reduced-precision runner's measured change against fp32 (the eval-mode model).

    Attributes:
        images: how many images were compared.
        source: what they were, e.g. ``"calibration images"`` or ``"example inputs"``.
        top1_agreement: fraction of them with the same top-1 class as fp32.
        max_abs_diff: the largest absolute difference between their logits.
    """

    images: int
    source: str
    top1_agreement: float
    max_abs_diff: float

    def line(self) -> str:
        return (
            f"against fp32 on {self.images} {self.source}: top-1 agreement "
            f"{100 * self.top1_agreement:.2f}%, max |Δlogit| {self.max_abs_diff:.3g}"
        )


@dataclass(eq=False)
class Runner:
    """A model made ready for fast inference: call it on a batch ``(N, C, H, W)`` to get logits.

    The batch size may differ from call to call; ``(C, H, W)`` is that of the example input.
    Each call of a torch backend sets torch's thread count to ``threads`` and restores it
    afterwards (ONNX Runtime and OpenVINO have threads of their own).

    Attributes:
        backend: the backend that runs (for ``auto``: the one it picked).
        threads: intra-op threads (torch's during calls and setup, ONNX Runtime's).
        input_size: ``(C, H, W)`` the runner takes.
        batch: the example's batch size (the one ``auto`` timed).
        setup_seconds: time ``optimize`` took (export, compile, quantization, measuring).
        note: what the backend does, in a few words.
        check: the parity check against eager on the example input (``None`` for ``int8`` and
            ``cuda``, whose outputs are not meant to agree to 1e-4; their note gives the top-1
            agreement instead).
        chosen_by: ``"explicit"``, ``"auto"`` (measured now) or ``"auto (cached)"``.
        measurements: for ``auto``, every candidate with its median or why it was dropped.
        cache_file: for ``auto``, the JSON file the choice was read from or written to.
        precision: ``"fp32"``, ``"bf16"`` (or ``"fp16"`` for ``cuda``) or ``"int8"``: the
            arithmetic it runs in.
        accuracy: for reduced precision, its measured change against fp32 (``None`` for fp32,
            whose ``check`` is the stricter parity rule).
        runs_torch: whether calls run torch (set its threads and inference mode); False for
            ONNX Runtime and OpenVINO.
    """

    backend: str
    threads: int
    input_size: tuple[int, int, int]
    run: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    device: str = "cpu"
    batch: int = 0
    setup_seconds: float = 0.0
    note: str = ""
    check: ParityCheck | None = None
    chosen_by: str = "explicit"
    measurements: list[Candidate] = field(default_factory=list)
    cache_file: Path | None = None
    precision: str = "fp32"
    accuracy: Accuracy | None = None
    runs_torch: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of the batch ``x`` (float32; on the CPU for the CPU
        backends, on ``x``'s device for ``cuda``)."""
        x = check_images("input", x, self.input_size)
        if not self.runs_torch:  # ONNX Runtime, OpenVINO: they take a float32 array themselves
            return self.run(x)
        if self.device == "cpu":
            x = x.to("cpu", torch.float32)
        with torch_threads(self.threads), torch.inference_mode():
            return self.run(x)

    def describe(self) -> str:
        """One line: backend, threads, setup time, the check, and what ``auto`` measured."""
        parts = [
            f"{self.backend}: {self.note}",
            f"{self.threads} thread{'s' if self.threads > 1 else ''}",
        ]
        parts.append(f"setup {self.setup_seconds:.1f} s")
        if self.check is not None:
            parts.append(f"parity with eager: {self.check.line()}")
        if self.accuracy is not None:
            parts.append(f"{self.precision} {self.accuracy.line()}")
        if self.chosen_by.startswith("auto"):
            timed = sorted(
                (c for c in self.measurements if c.error is None), key=lambda c: c.median_ms or 0
            )
            dropped = [f"{c.name} ({c.error})" for c in self.measurements if c.error is not None]
            how = "picked from cached medians" if "cached" in self.chosen_by else "picked"
            text = f"auto {how} at batch {self.batch}: {', '.join(c.text() for c in timed)}"
            if dropped:
                text += f"; not timed: {', '.join(dropped)}"
            parts.append(text)
        return "; ".join(parts).replace("\n", " ")


# --- argument checks -------------------------------------------------------------------------


def check_threads(threads: Any) -> int:
    """``threads`` as a positive int; ``torch.get_num_threads()`` when ``None``."""
    if threads is None:
        return torch.get_num_threads()
    if not is_int(threads) or threads < 1:
        raise InvalidArgumentError(
            f"threads must be a positive integer (or None for torch's {torch.get_num_threads()})"
            f", got {threads!r}."
        )
    return threads


def check_images(
    what: str, x: Any, size: tuple[int, ...] | None = None, *, fix: str = ""
) -> torch.Tensor:
    """``x`` if it is a float batch ``(N, C, H, W)`` with ``N ≥ 1`` (and ``(C, H, W) == size``
    when given); otherwise a one-line :class:`InvalidArgumentError`."""
    # x.shape and x.dtype only: each torch call costs up to 0.1 ms while the caches are cold
    shape = x.shape if isinstance(x, torch.Tensor) else ()
    ok = len(shape) == 4 and shape[0] > 0 and x.dtype.is_floating_point
    if ok and (size is None or tuple(shape[1:]) == tuple(size)):
        return x
    got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        got = f"{got} {x.dtype}"
    want = "(N, C, H, W)" if size is None else f"(N, {', '.join(map(str, size))})"
    fix = fix or "give preprocessed float images"
    raise InvalidArgumentError(f"{what} must be a float batch {want} with N ≥ 1, got {got}: {fix}.")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``threads`` inside, restored on leaving."""
    old = torch.get_num_threads()
    if old != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if old != threads:
            torch.set_num_threads(old)


# --- comparing outputs -----------------------------------------------------------------------


def agreement(
    runner_a: Callable[[torch.Tensor], torch.Tensor],
    runner_b: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 64,
) -> tuple[float, float]:
    """How closely two runners (or models) agree on ``images``.

    Args:
        runner_a: a :class:`Runner`, or any callable from a batch to logits (a model in eval
            mode works: calls run under ``torch.inference_mode``).
        runner_b: the same for the other side.
        images: preprocessed images ``(N, C, H, W)``, e.g. held-out validation images.
        batch_size: images per call.

    Returns:
        ``(top1_agreement, max_abs_diff)``: the fraction of images whose top-1 class is the
        same on both sides, and the largest absolute difference between their logits.

    Raises:
        InvalidArgumentError: ``images`` is not a float batch, or ``batch_size`` < 1.
    """
    images = check_images("images", images)
    check_int("batch_size", batch_size)
    same, diff = 0, 0.0
    with torch.inference_mode():
        for chunk in images.split(batch_size):
            a = runner_a(chunk).float().cpu()
            b = runner_b(chunk).float().cpu()
            same += int((a.argmax(1) == b.argmax(1)).sum())
            diff = max(diff, (a - b).abs().max().item())
    return same / len(images), diff


class RunnerModule(nn.Module):
    """A :class:`Runner` where code expects a classifier module (``predict_files``,
    ``evaluate``): ``forward`` runs the runner; ``num_classes`` and ``pretrained_cfg`` are those
    of the model it was made from. It has no parameters: its calls run on the CPU."""

    def __init__(self, runner: Runner, model: nn.Module) -> None:
        super().__init__()
        self.runner = runner
        self.num_classes = getattr(model, "num_classes", None)
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)
