"""Fast inference (cnnzoo.inference): every fp32 backend against the eager model for one model per
family, BatchNorm folding against the formula by hand, auto's choice and its cache, int8 on a
network trained here, and one-line errors.

References are computed here from the model itself (eval mode, no_grad), never taken from the
library. BatchNorm statistics are randomised so that a folding mistake would show. No test
asserts a time: the machine is shared.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cnnzoo.inference as inference
from cnnzoo import create_model
from cnnzoo.errors import CnnzooError, ExportError, InvalidArgumentError, UnknownModelError
from cnnzoo.inference import (
    AUTO_CANDIDATES,
    BACKENDS,
    agreement,
    auto,
    fold_batchnorm,
    optimize,
    ort,
)
from cnnzoo.inference.backends import Built
from tests.conftest import ONE_PER_FAMILY, randomise_bn

FP32 = ("eager", "channels_last", "fused", "fused_channels_last", "onnxruntime")
THREADS = 1


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread, given back after. On 2 shared cores with another process
    busy, a 2-thread forward was measured 100× slower than a 1-thread one (OpenMP waiting for a
    thread that has no core), which would only make these tests slow and their times noise."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def forget_the_last_case():
    yield
    _case.cache_clear()  # the last model of the parity tests need not outlive this module


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.train(was)
    return y


def _assert_parity(got: torch.Tensor, want: torch.Tensor) -> None:
    # DESIGN.md §4, different engines: 1e-4 · max(1, max |y|) and the same top-1.
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
    assert torch.equal(got.argmax(1), want.argmax(1))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


# --- every fp32 backend, one model per family -------------------------------------------------

CASES = [case for case in ONE_PER_FAMILY if case[0] != "mobilenet_v3_small"]
FAST = {"lenet5", "mlp", "resnet18"}  # the ONNX export of the others takes 3-14 s here
BOTH = {"resnet18", "mobilenet_v2"}  # fused + channels_last, each tested alone everywhere
# Their ONNX export alone takes 8-15 s here, and test_export.py checks the same files against
# the same models; the onnxruntime backend adds only the session, tested on the other six.
NO_ORT = {"alexnet", "vgg11_bn", "densenet121"}


@pytest.mark.parametrize(
    ("name", "size", "options", "backend"),
    [
        pytest.param(
            n,
            s,
            o,
            b,
            id=f"{n}-{b}",
            marks=[pytest.mark.slow] * (b == "onnxruntime" and n not in FAST),
        )
        for n, s, o in CASES
        for b in FP32
        if (b != "fused_channels_last" or n in BOTH) and (b != "onnxruntime" or n not in NO_ORT)
    ],
)
def test_every_fp32_backend_matches_eager(name, size, options, backend):
    model, example, other, want, want_other = _case(name, size, tuple(options.items()))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    runner = optimize(model, backend, example_input=example, threads=THREADS, model_name=name)

    assert runner.backend == backend
    _assert_parity(runner(example), want)
    _assert_parity(runner(other), want_other)  # another batch size
    assert model.training  # the user's model keeps its mode and its weights
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@functools.lru_cache(maxsize=1)  # the backends of one model run one after another
def _case(name: str, size: tuple[int, ...], options: tuple) -> tuple:
    """The model with random BatchNorm statistics, two batches (4 and 3) and their outputs."""
    model = randomise_bn(create_model(name, **dict(options)))
    g = torch.Generator().manual_seed(1)
    example, other = torch.randn(4, *size, generator=g), torch.randn(3, *size, generator=g)
    return model, example, other, _reference(model, example), _reference(model, other)


def test_fused_folds_every_batchnorm_that_follows_a_convolution():
    model = create_model("resnet18", num_classes=10)
    folded, pairs = fold_batchnorm(model, torch.randn(2, 3, 32, 32))
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(bn for _, bn in pairs) == sorted(bns)  # in ResNet each one follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(isinstance(model.get_submodule(bn), nn.BatchNorm2d) for bn in bns)  # untouched


# --- BatchNorm folding by hand ------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_folding_is_the_formula(bias):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(4, eps=1e-3)
    model = randomise_bn(nn.Sequential(conv, bn, nn.ReLU()), seed=2).eval()
    x = torch.randn(2, 3, 6, 6, generator=g)

    folded, pairs = fold_batchnorm(model, x)

    # w' = w·γ/√(σ²+ε), b' = (b−μ)·γ/√(σ²+ε) + β
    w, b = conv.weight.detach(), conv.bias.detach() if bias else torch.zeros(4)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w_hand = w * scale[:, None, None, None]
    b_hand = (b - bn.running_mean) * scale + bn.bias.detach()
    assert pairs == [("0", "1")]
    assert isinstance(folded[1], nn.Identity)
    torch.testing.assert_close(folded[0].weight.detach(), w_hand, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(folded[0].bias.detach(), b_hand, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        by_hand = F.relu(F.conv2d(x, w_hand, b_hand, padding=1))
        y = folded(x)
        eager = model(x)
    torch.testing.assert_close(y, by_hand, rtol=1e-6, atol=1e-6)
    assert (y - eager).abs().max().item() <= 1e-5 * max(1.0, eager.abs().max().item())
    assert isinstance(model[1], nn.BatchNorm2d) and torch.equal(model[0].weight, w)


class _Unsafe(nn.Module):
    """Four conv → BN pairs of which only ``plain`` may be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.plain, self.plain_bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
        self.reused, self.reused_bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)  # output read twice
        self.shared, self.shared_bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)  # called twice
        self.custom, self.custom_bn = _Doubled(2, 2, 1), nn.BatchNorm2d(2)  # its own forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.plain_bn(self.plain(x))
        y = self.reused(x)
        x = self.reused_bn(y) + y
        x = self.shared_bn(self.shared(x)) + self.shared(x)
        return self.custom_bn(self.custom(x)).mean((2, 3))


class _Doubled(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_only_safe_pairs_are_folded():
    model = randomise_bn(_Unsafe()).eval()
    x = torch.randn(3, 2, 4, 4)
    folded, pairs = fold_batchnorm(model, x)
    assert pairs == [("plain", "plain_bn")]
    want = _reference(model, x)
    with torch.no_grad():
        _assert_parity(folded(x), want)
    runner = optimize(model, "fused", example_input=x, threads=THREADS)
    _assert_parity(runner(x), want)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.sum() > 0:  # control flow on values: no tracer can follow it
            y = -y
        return self.fc(y.mean((2, 3)))


def test_fused_on_an_untraceable_model_is_one_line():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(_DataDependent(), "fused", example_input=torch.randn(2, 1, 8, 8))
    assert "cannot fold BatchNorm in _DataDependent" in _one_line(err)


# --- torch.compile ------------------------------------------------------------------------


@pytest.mark.slow  # compiling takes 5-20 s per model here
def test_compile_matches_eager():
    model = create_model("lenet5")
    g = torch.Generator().manual_seed(0)
    example, other = torch.randn(2, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)
    runner = optimize(model, "compile", example_input=example, threads=THREADS)
    assert runner.backend == "compile" and "compiled in" in runner.describe()
    _assert_parity(runner(example), _reference(model, example))
    _assert_parity(runner(other), _reference(model, other))


# --- auto ---------------------------------------------------------------------------------


@pytest.fixture
def count_measure(monkeypatch) -> list[list[str]]:
    """Every call of auto.measure, as the list of candidates it timed."""
    calls: list[list[str]] = []
    real = auto.measure

    def counted(runners, x):
        calls.append(list(runners))
        return real(runners, x)

    monkeypatch.setattr(auto, "measure", counted)
    monkeypatch.setattr(auto, "BUDGET_S", 0.2)  # a few rounds are enough to test the logic
    return calls


def test_auto_measures_once_then_reuses_its_cache(tmp_path, count_measure):
    model = randomise_bn(create_model("resnet20"))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = _reference(model, x)

    first = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    assert len(count_measure) == 1 and set(count_measure[0]) == set(AUTO_CANDIDATES)
    assert first.backend in AUTO_CANDIDATES and first.chosen_by == "auto"
    timed = {c.name: c.median_ms for c in first.measurements if c.error is None}
    assert first.backend == min(timed, key=timed.get)
    _assert_parity(first(x), want)
    line = first.describe()
    assert "\n" not in line and all(name in line for name in AUTO_CANDIDATES)
    entry = json.loads(first.cache_file.read_text())
    assert first.cache_file.parent == tmp_path / "inference"
    assert entry["backend"] == first.backend
    assert entry["key"]["batch"] == 4 and entry["key"]["threads"] == THREADS
    assert entry["key"]["model"] == "ResNet" and entry["key"]["input_shape"] == [4, 3, 16, 16]

    second = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    assert len(count_measure) == 1  # not measured again
    assert second.backend == first.backend and second.chosen_by == "auto (cached)"
    assert second.cache_file == first.cache_file
    _assert_parity(second(x), want)


def test_another_batch_size_or_a_damaged_entry_is_measured(tmp_path, monkeypatch, count_measure):
    monkeypatch.setattr(inference, "AUTO_CANDIDATES", ("eager", "channels_last", "fused"))
    model = randomise_bn(create_model("resnet20"))
    x = torch.randn(4, 3, 16, 16)
    first = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    assert len(count_measure) == 1

    optimize(model, example_input=x[:2], threads=THREADS, cache_dir=tmp_path)
    assert len(count_measure) == 2  # another batch size is another key
    assert len(list((tmp_path / "inference").glob("auto-*.json"))) == 2

    first.cache_file.write_text("{not json")  # a damaged entry is measured again, replaced
    again = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    assert len(count_measure) == 3 and again.chosen_by == "auto"
    assert json.loads(first.cache_file.read_text())["backend"] == again.backend


def test_one_export_serves_every_onnx_backend_and_a_given_file_is_loaded(
    tmp_path, monkeypatch, count_measure
):
    exports: list[Path] = []
    real = ort.export_model

    def counted(model, path, *args, **kwargs):
        exports.append(Path(path))
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(ort, "export_model", counted)
    model = randomise_bn(create_model("resnet20"))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = _reference(model, x)

    runner = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    timed = {c.name for c in runner.measurements if c.error is None}
    assert {"onnxruntime", "openvino"} <= timed  # both built and checked, from one export
    assert len(exports) == 1 and not exports[0].exists()  # its folder went with the call

    path = tmp_path / "resnet20.onnx"
    real(model, path, "onnx", input_size=(3, 16, 16))
    exports.clear()
    for backend in ("onnxruntime", "openvino", "openvino_int8"):
        given = optimize(
            model, backend, example_input=x, threads=THREADS, onnx_file=path, calibration=x
        )
        assert "resnet20.onnx" in given.note
        if backend != "openvino_int8":
            _assert_parity(given(x), want)
    assert exports == []  # nothing exported again

    other = randomise_bn(create_model("resnet20"))  # other weights: the file is not this model
    with pytest.raises(ExportError) as err:
        optimize(other, "onnxruntime", example_input=x, threads=THREADS, onnx_file=path)
    assert "does not compute what" in _one_line(err)
    for missing, why in ((tmp_path / "none.onnx", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(InvalidArgumentError) as err:
            optimize(model, "onnxruntime", example_input=x, threads=THREADS, onnx_file=missing)
        assert why in _one_line(err) and "onnx_file" in _one_line(err)


def test_the_cache_key_follows_batch_threads_and_architecture():
    model = create_model("resnet20")
    x = torch.randn(4, 3, 16, 16)

    def key(m=model, example=x, threads=2):
        return auto.cache_key(m, "resnet20", example, threads, AUTO_CANDIDATES)

    assert key() == key()
    assert key(example=x[:2]) != key() and key(threads=1) != key()
    assert key(m=create_model("resnet20", num_classes=5)) != key()
    assert key(m=randomise_bn(create_model("resnet20"))) == key()  # weights' values do not count
    assert auto.cache_file(Path("c"), key(example=x[:2])) != auto.cache_file(Path("c"), key())


def _wrong_but_instant(ctx):
    # Precomputed and wrong: it would be the fastest by far if checks did not stop it.
    wrong = torch.zeros(len(ctx.example), 10)
    wrong[:, 0] = 1.0
    return Built(lambda x: wrong[: len(x)], "returns constants")


def test_auto_never_picks_a_backend_that_fails_its_check(tmp_path, monkeypatch, count_measure):
    monkeypatch.setitem(inference.BUILDERS, "fused", _wrong_but_instant)
    monkeypatch.setattr(inference, "AUTO_CANDIDATES", ("eager", "fused", "channels_last"))
    model = randomise_bn(create_model("resnet20"))
    x = torch.randn(4, 3, 16, 16)

    runner = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)

    assert runner.backend in ("eager", "channels_last")
    assert "fused" not in count_measure[0]  # never even timed
    fused = next(c for c in runner.measurements if c.name == "fused")
    assert fused.median_ms is None and "does not compute" in fused.error
    _assert_parity(runner(x), _reference(model, x))


def test_a_cached_choice_that_now_fails_is_measured_again(tmp_path, monkeypatch, count_measure):
    monkeypatch.setattr(inference, "AUTO_CANDIDATES", ("eager", "channels_last"))
    model = randomise_bn(create_model("resnet20"))
    x = torch.randn(4, 3, 16, 16)
    first = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)
    monkeypatch.setitem(inference.BUILDERS, first.backend, _wrong_but_instant)

    again = optimize(model, example_input=x, threads=THREADS, cache_dir=tmp_path)

    assert len(count_measure) == 2 and again.backend != first.backend
    _assert_parity(again(x), _reference(model, x))


def test_auto_drops_a_candidate_that_cannot_be_built(tmp_path, monkeypatch, count_measure):
    monkeypatch.setattr(inference, "AUTO_CANDIDATES", ("eager", "fused"))
    runner = optimize(_DataDependent(), example_input=torch.randn(2, 1, 8, 8), cache_dir=tmp_path)
    assert runner.backend == "eager" and count_measure == [["eager"]]
    fused = next(c for c in runner.measurements if c.name == "fused")
    assert "cannot fold BatchNorm" in fused.error


def test_auto_with_no_passing_candidate_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(inference.BUILDERS, "fused", _wrong_but_instant)
    monkeypatch.setattr(inference, "AUTO_CANDIDATES", ("fused",))
    with pytest.raises(ExportError) as err:
        optimize(create_model("lenet5"), example_input=X, cache_dir=tmp_path)
    assert "no backend for LeNet5 passed its check" in _one_line(err)
    assert not (tmp_path / "inference").exists()


# --- threads and ONNX Runtime's spinning ------------------------------------------------------


class _ThreadSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.fc(x.flatten(1))


def test_threads_apply_during_each_call_and_are_restored():
    outside = torch.get_num_threads()
    wanted = outside + 1  # 2: the spy's forward is one tiny matrix product
    runner = optimize(_ThreadSpy(), "eager", example_input=torch.randn(2, 1, 2, 2), threads=wanted)
    spy = runner.run  # eager runs the runner's own copy of the model
    spy.seen.clear()
    runner(torch.randn(3, 1, 2, 2))
    assert spy.seen == [wanted] and torch.get_num_threads() == outside
    assert f"{wanted} threads" in runner.describe()


@pytest.mark.parametrize("backend", ["onnxruntime", "int8"])
def test_onnxruntime_workers_spin_only_while_a_run_lasts(backend, monkeypatch):
    """Workers may spin between the operators of a run, but must stop when it returns (spinning
    on would take the cores from whatever runs next). Checked on the settings of the session
    each backend really runs, after a run — not by timing, which on a shared machine measures
    the other jobs too; benchmarks/ort_spinning.py measures the idle CPU time it saves."""
    import onnxruntime

    from cnnzoo.inference import ort

    sessions = []
    made_by_the_library = ort.ort_session

    def spy(path, threads):
        sessions.append(made_by_the_library(path, threads))
        return sessions[-1]

    monkeypatch.setattr(ort, "ort_session", spy)
    calibration = torch.rand(16, 1, 32, 32) if backend == "int8" else None
    runner = optimize(
        create_model("lenet5"), backend, example_input=X, threads=2, calibration=calibration
    )
    runner(X)
    (session,) = sessions
    options = session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]
    # ONNX Runtime's default spins on after a run: without the entry the check above fails.
    with pytest.raises(RuntimeError, match="force_spinning_stop"):
        onnxruntime.SessionOptions().get_session_config_entry("session.force_spinning_stop")


def test_an_engine_runner_takes_any_float_batch_and_leaves_torch_alone(monkeypatch):
    """ONNX Runtime and OpenVINO runners convert the batch themselves, touching torch as little
    as they can (each torch call costs up to 0.1 ms on a call after a pause): no thread switch,
    no inference mode, no copy of a float32 CPU batch; any other float batch still works."""
    from cnnzoo.onnxrt import as_array

    model = create_model("lenet5").eval()
    runner = optimize(model, "onnxruntime", example_input=X, threads=2)
    assert not runner.runs_torch
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        want = model(x)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail("threads were set"))
    for batch in (
        x.double(),
        x.clone().requires_grad_(),
        x.contiguous(memory_format=torch.channels_last),
    ):
        got = runner(batch)
        _assert_parity(got, want)
        assert not got.is_inference()  # usable in code that records autograd
    assert np.shares_memory(as_array(x), x.numpy())
    assert as_array(x.double()).dtype == np.float32
    rounded = x.bfloat16()  # a float type NumPy lacks
    assert np.array_equal(as_array(rounded), rounded.float().numpy())


# --- int8 on a network trained here -------------------------------------------------------


@pytest.fixture(scope="module")
def trained_resnet20(tmp_path_factory) -> Path:
    """ResNet-20 trained 2 epochs on the digits at 32 px (about 97% validation accuracy)."""
    out = tmp_path_factory.mktemp("int8") / "resnet20"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread is faster on shared cores
    argv = ["train", "--model", "resnet20", "--epochs", "2", "--image-size", "32", "--out",
            str(out), "--quiet"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "cnnzoo", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "model.safetensors"


@pytest.mark.slow  # training (about 20 s) then export and quantization
def test_int8_agrees_with_fp32_on_validation_images(trained_resnet20):
    from cnnzoo.data import load_dataset
    from cnnzoo.weights import load_weights

    model, load = load_weights(None, trained_resnet20)
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    train = torch.stack([data.train[i][0] for i in range(256)])
    val = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = torch.tensor([data.val[i][1] for i in range(len(data.val))])

    int8 = optimize(model, "int8", example_input=val[:8], calibration=train, threads=THREADS,
                    model_name=load.model)  # fmt: skip
    top1, max_diff = agreement(int8, model, val)

    with torch.no_grad():
        fp32_logits, int8_logits = model(val), int8(val)
    by_hand = (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean().item()
    assert top1 == pytest.approx(by_hand)
    assert max_diff == pytest.approx((fp32_logits - int8_logits).abs().max().item(), rel=1e-6)
    fp32_acc = (fp32_logits.argmax(1) == labels).float().mean().item()
    int8_acc = (int8_logits.argmax(1) == labels).float().mean().item()
    report = f"agreement {top1:.4f}, fp32 accuracy {fp32_acc:.4f}, int8 {int8_acc:.4f}"
    assert top1 >= 0.95, report
    assert max_diff > 1e-4 * max(1.0, fp32_logits.abs().max().item()), "not quantized?"
    assert int8(val[:3]).shape == (3, 10)  # any batch size


def test_agreement_counts_top1_and_the_largest_difference():
    logits = torch.tensor([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0], [1.0, 0.0]])
    images = logits[:, :, None, None]  # the "model" reads its logits off the image

    def a(x):
        return x.flatten(1)

    def b(x):
        return x.flatten(1) * torch.tensor([1.0, 1.5])  # flips row 2 only (5 vs 6)

    assert agreement(a, b, images, batch_size=3) == (0.75, 2.0)


# --- bad inputs ---------------------------------------------------------------------------

X = torch.randn(2, 1, 32, 32)


def test_an_unknown_backend_lists_the_choices():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(create_model("lenet5"), "tensorrt", example_input=X)
    text = _one_line(err)
    assert "'tensorrt'" in text and all(name in text for name in BACKENDS)


def test_int8_needs_calibration_images():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(create_model("lenet5"), "int8", example_input=X)
    assert "calibration" in _one_line(err) and "(M, 1, 32, 32)" in str(err.value)


def test_int8_calibration_of_another_size_is_refused():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(
            create_model("lenet5"), "int8", example_input=X, calibration=torch.randn(4, 3, 32, 32)
        )
    assert "calibration must be" in _one_line(err)


def test_cuda_without_a_gpu_says_so(monkeypatch):
    # As on a machine without a GPU, so that the test runs (not skips) on one with a GPU too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidArgumentError) as err:
        optimize(create_model("lenet5"), "cuda", example_input=X)
    assert "needs a CUDA GPU" in _one_line(err)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_integer(threads):
    with pytest.raises(InvalidArgumentError) as err:
        optimize(create_model("lenet5"), "eager", example_input=X, threads=threads)
    assert "threads must be a positive integer" in _one_line(err)


@pytest.mark.parametrize(
    "example",
    [
        torch.randn(1, 32, 32),
        torch.zeros(2, 1, 32, 32, dtype=torch.uint8),
        [[0.0]],
        torch.randn(0, 1, 32, 32),
    ],
    ids=["3-d", "uint8", "list", "empty"],
)
def test_a_bad_example_input_is_refused(example):
    with pytest.raises(InvalidArgumentError) as err:
        optimize(create_model("lenet5"), "eager", example_input=example)
    assert "example_input must be a float batch" in _one_line(err)


def test_a_runner_refuses_inputs_of_another_size():
    runner = optimize(create_model("lenet5"), "eager", example_input=X, threads=THREADS)
    with pytest.raises(InvalidArgumentError) as err:
        runner(torch.randn(2, 1, 34, 34))
    assert "(N, 1, 32, 32)" in _one_line(err)


def test_other_bad_arguments():
    lenet = create_model("lenet5")
    with pytest.raises(UnknownModelError) as err:
        optimize(lenet, "eager", example_input=X, model_name="lenet")
    assert "unknown model 'lenet' (did you mean lenet5" in _one_line(err)
    with pytest.raises(InvalidArgumentError) as err:
        optimize(lenet, "eager", example_input=X, cuda_dtype="fp8")
    assert "cuda_dtype must be bf16 or fp16, got 'fp8'" in _one_line(err)
    with pytest.raises(InvalidArgumentError) as err:
        optimize("lenet5", "eager", example_input=X)
    assert "model must be a torch nn.Module, got str" in _one_line(err)


def test_a_model_returning_a_tuple_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x.flatten(1), x.flatten(1)

    with pytest.raises(InvalidArgumentError) as err:
        optimize(Pair(), "eager", example_input=X)
    assert "one (N, classes) tensor" in _one_line(err)


def test_a_parity_failure_of_a_chosen_backend_is_one_line(monkeypatch):
    monkeypatch.setitem(inference.BUILDERS, "channels_last", _wrong_but_instant)
    with pytest.raises(ExportError) as err:
        optimize(create_model("lenet5"), "channels_last", example_input=X, threads=THREADS)
    assert "does not compute what LeNet5 computes" in _one_line(err)
    assert isinstance(err.value, CnnzooError)


def test_calibration_images_are_spread_over_the_split():
    from cnnzoo.inference import CALIBRATION_IMAGES, calibration_images

    # Item i is the image filled with i, so the picked indices can be read back.
    split = [(torch.full((1, 2, 2), float(i)), i // 10) for i in range(100)]
    picked = calibration_images(split, 4)[:, 0, 0, 0].tolist()
    assert picked == [0.0, 25.0, 50.0, 75.0]  # every class group, not the first four images
    assert calibration_images(split)[:, 0, 0, 0].tolist() == [float(i) for i in range(100)]
    assert CALIBRATION_IMAGES == 256
    for bad, match in ((0, "count must be a positive integer"), (True, "count must be")):
        with pytest.raises(InvalidArgumentError, match=match):
            calibration_images(split, bad)
    with pytest.raises(InvalidArgumentError, match="no images"):
        calibration_images([], 4)


def test_bench_calibrates_on_digits_of_every_class():
    from cnnzoo import bench
    from cnnzoo.data import load_dataset
    from cnnzoo.inference import calibration_images

    train = load_dataset("digits", image_size=16, in_chans=1).train
    got = bench._calibration((1, 16, 16))
    assert torch.equal(got, calibration_images(train, bench.CALIBRATION_COUNT))
    step = len(train) // bench.CALIBRATION_COUNT
    labels = {int(train[i][1]) for i in range(0, step * bench.CALIBRATION_COUNT, step)}
    assert labels == set(range(10))


def test_cudnn_benchmark_is_on_only_inside_a_call():
    from cnnzoo.inference.backends import cudnn_benchmark

    cudnn = torch.backends.cudnn
    was = cudnn.benchmark
    try:
        cudnn.benchmark = False
        with cudnn_benchmark():
            assert cudnn.benchmark
        assert not cudnn.benchmark
        with pytest.raises(RuntimeError), cudnn_benchmark():
            raise RuntimeError("a failed call")
        assert not cudnn.benchmark
        # A user who asked for repeatable algorithms keeps them.
        torch.use_deterministic_algorithms(True)
        try:
            with cudnn_benchmark():
                assert not cudnn.benchmark
        finally:
            torch.use_deterministic_algorithms(False)
    finally:
        cudnn.benchmark = was
