"""Shared fixtures: the published reference numbers and the tolerance policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# A verbatim copy of the project's reference table (published parameter counts, multiply-adds
# and accuracies; see tests/data/README.md), so that tests need nothing outside the clone.
REFERENCE_JSON = Path(__file__).parent / "data" / "reference_models.json"


def load_reference() -> dict[str, dict]:
    return json.loads(REFERENCE_JSON.read_text())["models"]


_STDERR: list[int] = []  # a copy of the session's own stderr, taken before any test runs


def pytest_configure(config) -> None:
    """Under pytest-xdist (`make test` runs two worker processes on a 2-core machine) each
    worker computes with one thread: two workers of two threads each would oversubscribe the
    cores, and torch's threads wait for each other by spinning."""
    import os

    _STDERR.append(os.dup(2))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _crashes_print_their_stacks() -> None:
    """A native crash prints every thread's Python stack to the session's stderr.

    pytest's faulthandler does this until a library re-enables faulthandler on whatever fd 2 is
    at that moment: torch's elastic error handler does (torch.multiprocessing.spawn, the elastic
    agent), inside a test, where fd 2 is pytest's capture file, which dies with the process. So
    each test points it back at the copy taken before capture."""
    import faulthandler

    faulthandler.enable(file=_STDERR[0], all_threads=True)
    _no_alternate_signal_stack()


def _no_alternate_signal_stack() -> None:
    """Signal handlers run on the main thread's own stack, not on faulthandler's alternate one.

    Python's handlers are installed with SA_ONSTACK, so once faulthandler has set up its
    alternate stack (58 KB), a SIGCHLD for a finished subprocess or DataLoader worker is handled
    there; in some full runs on this AMX machine the kernel could not deliver it and killed the
    worker with SIGSEGV (si_code SI_KERNEL; docs/architecture.md, "Tests"). Without the
    alternate stack faulthandler still reports every crash but a stack overflow."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                    ("ss_size", ctypes.c_size_t)]  # fmt: skip

    ss_disable = 2  # SS_DISABLE, <bits/ss_flags.h>
    if ctypes.CDLL(None).sigaltstack(ctypes.byref(StackT(None, ss_disable, 0)), None) != 0:
        raise OSError("sigaltstack(SS_DISABLE) failed")


@pytest.fixture(autouse=True)
def _no_dataloader_sigchld_handler_after_a_test():
    """A test that iterates a DataLoader with worker processes in pytest's own process leaves
    torch's SIGCHLD handler installed for the rest of the session (torch sets it once per
    process). Each later subprocess's exit then delivers a signal to the main thread, and on
    this AMX machine such a delivery killed pytest with a kernel-sent SIGSEGV (si_code
    SI_KERNEL, the main thread waiting in poll() for `python -m cnnzoo ...`: read from the
    core of a crashed worker) in some full runs. The handler only serves the loader that set
    it, so it is taken down when its test ends."""
    yield
    import signal

    from torch.utils.data._utils import signal_handling

    if signal_handling._SIGCHLD_handler_set:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal_handling._SIGCHLD_handler_set = False


@pytest.fixture(scope="session")
def reference() -> dict[str, dict]:
    return load_reference()


def same_outputs(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """The project's tolerance for re-implementations: |a − b| ≤ rtol · max(1, max |a|)."""
    scale = max(1.0, a.abs().max().item())
    return (a - b).abs().max().item() <= rtol * scale


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory) -> None:
    """`auto`'s choices go to a cache of the test session, never the user's ~/.cache/cnnzoo."""
    import os

    os.environ["CNNZOO_CACHE"] = str(tmp_path_factory.mktemp("cnnzoo-cache"))


def printed_as(value: float, text: str) -> bool:
    """``value`` printed with as many decimals as ``text`` has reads ``text`` (a paper's figure
    "at its rounding")."""
    decimals = len(text.partition(".")[2])
    return f"{value:.{decimals}f}" == text


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters (returned in eval mode): fresh
    BatchNorm (mean 0, var 1, γ 1, β 0) would hide a wrongly folded or exported statistic."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


# One model per family at a small input (fewer classes where that makes it lighter): the cases
# of the export and inference parity tests.
ONE_PER_FAMILY = [
    ("lenet5", (1, 32, 32), {}),
    ("mlp", (1, 32, 32), {}),
    ("alexnet", (3, 63, 63), {"num_classes": 10}),
    ("vgg11_bn", (3, 32, 32), {"num_classes": 10}),
    ("googlenet", (3, 32, 32), {"num_classes": 10, "aux_logits": True}),
    ("resnet18", (3, 32, 32), {"num_classes": 10}),
    ("densenet121", (3, 32, 32), {"num_classes": 10}),
    ("mobilenet_v2", (3, 32, 32), {"num_classes": 10}),
    ("mobilenet_v3_small", (3, 32, 32), {"num_classes": 10}),
    ("efficientnet_b0", (3, 32, 32), {"num_classes": 10}),
]


def failing_layer(model: torch.nn.Module, x: torch.Tensor) -> tuple[str, tuple, Exception]:
    """Runs ``model(x)``, which must raise, and returns the innermost module that was running
    when it did (by name; "" for the model itself), the shape of that module's input, and the
    error — so that a test can check that a refusal came from the layer it expects."""
    names = {id(m): n for n, m in model.named_modules()}
    running: list[tuple[str, tuple]] = []

    def enter(module, args):
        shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else ()
        running.append((names.get(id(module), "?"), shape))

    def leave(module, args, output):
        running.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    except Exception as err:  # any kind: the caller checks which it was
        return (*running[-1], err)
    finally:
        for handle in handles:
            handle.remove()
    raise AssertionError(f"{type(model).__name__} ran on {tuple(x.shape)}; it should not")


def assert_window_too_large(model: torch.nn.Module, x: torch.Tensor) -> str:
    """``model(x)`` fails because a convolution or pooling window no longer fits the map it
    slides on (W' = ⌊(W − F + 2P)/S⌋ + 1 < 1 at that layer, by the textbook formula), and torch
    says so; any other failure (a linear layer of the wrong width, a bad concatenation) fails
    the test. Returns the layer's name."""
    from cnnzoo.analysis.formulas import conv_output_size

    name, shape, err = failing_layer(model, x)
    layer = model.get_submodule(name)
    windows = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d)
    assert isinstance(layer, windows), f"{name} ({type(layer).__name__}) raised: {err}"
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    kernel, stride, padding = pair(layer.kernel_size), pair(layer.stride), pair(layer.padding)
    dilation = pair(getattr(layer, "dilation", 1))
    ceil = getattr(layer, "ceil_mode", False)
    outs = [
        conv_output_size(shape[2 + i], kernel[i], stride[i], padding[i], dilation[i], ceil)
        for i in (0, 1)
    ]
    assert min(outs) < 1, f"{name} fits its {shape} input ({outs}), yet raised: {err}"
    text = str(err)
    assert "Output size is too small" in text or "Kernel size can't be greater" in text, text
    return name
