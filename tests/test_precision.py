"""The precision policy: OpenVINO (fp32, bf16, int8), torch bf16, optimize(precision=...), the
--precision options, their error paths, and auto's choice (fake timings: no timing in tests).

One trained LeNet-5 (digits, 32 px) serves every test: its reduced-precision runners are built
once per module, under a guard that fails any network connection (OpenVINO and NNCF must send
nothing).
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import torch

import cnnzoo
import cnnzoo.extras
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.errors import ExportError, InvalidArgumentError
from cnnzoo.inference import (
    agreement,
    auto,
    backends,
    calibration_images,
    optimize,
)
from cnnzoo.weights import load_weights

# Not importorskip: importing openvino here, before cnnzoo turns its telemetry off, is the
# very thing the telemetry test checks cnnzoo does not do.
# The openvino extra is part of dev (make test installs it): missing, the module fails, never skips.
assert importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"), (
    "the openvino extra is not installed: pip install -e '.[dev]'"
)
BF16 = backends.bf16_capable()


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "lenet5"
    assert main(["train", "--model", "lenet5", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def setup(trained):
    model = load_weights(None, trained)[0].eval()
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    calibration = calibration_images(data.train, 64)
    val = torch.stack([data.val[i][0] for i in range(len(data.val))])
    return model, calibration, val


@pytest.fixture(scope="module")
def runners(setup):
    """The OpenVINO and torch bf16 runners, built with every socket connection refused."""
    model, calibration, _ = setup
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("no network in tests")

    names = ["openvino", "openvino_int8", *(["openvino_bf16", "bf16"] if BF16 else [])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        built = {
            name: optimize(
                model, name, example_input=calibration[:4], threads=2, calibration=calibration
            )
            for name in names
        }
    assert attempts == []
    return built


def test_openvino_fp32_is_checked_like_every_fp32_backend(setup, runners):
    model, _, val = setup
    runner = runners["openvino"]
    assert runner.check is not None and runner.check.passed and runner.precision == "fp32"
    assert runner.accuracy is None and "INFERENCE_PRECISION_HINT=f32" in runner.note
    with torch.no_grad():
        want = model(val[:37])
    got = runner(val[:37])  # another batch size compiles again
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_telemetry_cannot_be_imported(runners):
    # OpenVINO's converter and NNCF fall back to their stubs when the package is missing.
    assert sys.modules.get("openvino_telemetry") is None
    import os

    assert os.environ.get("NNCF_CI")


@pytest.mark.parametrize("name", ["openvino_int8", "openvino_bf16", "bf16"])
def test_reduced_runners_report_their_change_against_fp32(setup, runners, name):
    if name not in runners:
        pytest.skip("this CPU has no bf16 instructions")
    model, calibration, val = setup
    runner = runners[name]
    assert runner.precision == name.removeprefix("openvino_") and runner.check is None
    # The reported change, recomputed here on the same 64 calibration images.
    top1, diff = agreement(runner, model, calibration)
    assert runner.accuracy.images == 64 and "calibration" in runner.accuracy.source
    assert runner.accuracy.top1_agreement == top1
    assert runner.accuracy.max_abs_diff == pytest.approx(diff, rel=1e-6)
    assert diff > 0  # really reduced: fp32 would agree to ~1e-6
    assert f"{name.removeprefix('openvino_')} against fp32 on 64" in runner.describe()
    # On trained weights, held-out images: the top-1 barely moves.
    assert agreement(runner, model, val)[0] >= 0.97


# --- the policy's error paths, one line each ----------------------------------------------

X = torch.randn(2, 1, 32, 32)


def test_an_fp32_backend_with_a_reduced_precision_is_refused():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(cnnzoo.create_model("lenet5"), "eager", precision="bf16", example_input=X)
    assert "'eager' runs in fp32, not bf16" in one_line(err) and "openvino_bf16" in str(err.value)


def test_an_unknown_precision_lists_the_choices():
    with pytest.raises(InvalidArgumentError) as err:
        optimize(cnnzoo.create_model("lenet5"), precision="fp8", example_input=X)
    assert "'fp8'" in one_line(err) and "fp32, bf16, int8" in str(err.value)


@pytest.mark.parametrize(
    ("backend", "precision", "what"),
    [("openvino_int8", None, "backend 'openvino_int8'"), ("auto", "int8", "precision 'int8'")],
)
def test_int8_without_calibration_images_says_how_to_give_them(backend, precision, what):
    with pytest.raises(InvalidArgumentError) as err:
        optimize(cnnzoo.create_model("lenet5"), backend, precision=precision, example_input=X)
    assert one_line(err).startswith(f"{what} needs calibration images")
    assert "(M, 1, 32, 32)" in str(err.value) and "--calibrate" in str(err.value)


def test_openvino_missing_names_the_extra(monkeypatch, tmp_path):
    real = cnnzoo.extras.importlib.import_module

    def without_openvino(name, *args):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *args)

    monkeypatch.setattr(cnnzoo.extras.importlib, "import_module", without_openvino)
    with pytest.raises(ExportError) as err:
        optimize(cnnzoo.create_model("lenet5"), "openvino", example_input=X)
    assert "pip install 'cnnzoo[openvino]'" in one_line(err)
    # auto drops the candidate with that reason and keeps measuring the others
    monkeypatch.setattr(cnnzoo.inference, "AUTO_CANDIDATES", ("eager", "openvino"))
    monkeypatch.setattr(auto, "measure", lambda runners, x: dict.fromkeys(runners, 1.0))
    runner = optimize(cnnzoo.create_model("lenet5"), example_input=X, cache_dir=tmp_path)
    assert runner.backend == "eager"
    (dropped,) = [c for c in runner.measurements if c.error]
    assert dropped.name == "openvino" and "cnnzoo[openvino]" in dropped.error


@pytest.mark.parametrize("backend", ["bf16", "openvino_bf16"])
def test_bf16_on_a_cpu_without_it_is_refused(monkeypatch, backend):
    monkeypatch.setattr(backends, "bf16_capable", lambda: False)
    with pytest.raises(InvalidArgumentError) as err:
        optimize(cnnzoo.create_model("lenet5"), backend, example_input=X)
    assert f"backend {backend!r} needs a CPU with bfloat16 instructions" in one_line(err)


def test_auto_bf16_on_a_cpu_without_it_falls_back_to_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(cnnzoo.inference, "bf16_capable", lambda: False)
    monkeypatch.setattr(cnnzoo.inference, "AUTO_CANDIDATES", ("eager",))
    monkeypatch.setattr(auto, "measure", lambda runners, x: dict.fromkeys(runners, 1.0))
    runner = optimize(
        cnnzoo.create_model("lenet5"), precision="bf16", example_input=X, cache_dir=tmp_path
    )
    assert runner.backend == "eager" and runner.precision == "fp32"
    assert "this CPU has no bfloat16 instructions (avx512_bf16, AMX): fp32 instead" in runner.note


# --- auto's choice, with fake timings --------------------------------------------------------


@pytest.mark.parametrize(("fast", "slow"), [("eager", "channels_last"), ("channels_last", "eager")])
def test_auto_keeps_the_smallest_median(monkeypatch, tmp_path, fast, slow):
    monkeypatch.setattr(cnnzoo.inference, "AUTO_CANDIDATES", ("eager", "channels_last"))
    monkeypatch.setattr(auto, "measure", lambda runners, x: {fast: 0.001, slow: 0.003})
    runner = optimize(cnnzoo.create_model("lenet5"), example_input=X, cache_dir=tmp_path)
    assert runner.backend == fast
    timed = {c.name: c.median_ms for c in runner.measurements}
    assert timed == {fast: 1.0, slow: 3.0}


def fake_engines(monkeypatch, names):
    """Builders for ``names`` that run the model as it is (no engine to set up), as reduced
    runners are (measured against fp32, no parity check)."""

    def build(ctx, name):
        return backends.Built(ctx.model, f"fake {name}", exact=False)

    for name in names:
        monkeypatch.setitem(cnnzoo.inference.BUILDERS, name, lambda ctx, n=name: build(ctx, n))


@pytest.mark.parametrize(
    ("times", "backend", "precision"),
    [
        ({"openvino_int8": 2e-3, "int8": 3e-3, "openvino_bf16": 1e-3, "bf16": 4e-3},
         "openvino_bf16", "bf16"),
        ({"openvino_int8": 2e-3, "int8": 1e-3, "openvino_bf16": 3e-3, "bf16": 4e-3},
         "int8", "int8"),
        # int8 faster, but by less than auto's 5% margin: the more accurate bf16 is kept
        ({"openvino_int8": 1e-3, "int8": 3e-3, "openvino_bf16": 1.04e-3, "bf16": 4e-3},
         "openvino_bf16", "bf16"),
        ({"openvino_int8": 1e-3, "int8": 3e-3, "openvino_bf16": 1.06e-3, "bf16": 4e-3},
         "openvino_int8", "int8"),
    ],
)  # fmt: skip
def test_auto_int8_keeps_bf16_where_it_is_faster_and_says_why(
    monkeypatch, tmp_path, setup, times, backend, precision
):
    model, calibration, _ = setup
    fake_engines(monkeypatch, times)
    monkeypatch.setattr(auto, "measure", lambda runners, x: times)
    kwargs = dict(precision="int8", example_input=X, calibration=calibration, cache_dir=tmp_path)
    for chosen_by in ("auto", "auto (cached)"):  # the cached choice says it again
        runner = optimize(model, **kwargs)
        assert (runner.backend, runner.precision, runner.chosen_by) == (
            backend, precision, chosen_by)  # fmt: skip
        assert {c.name for c in runner.measurements} == set(times)
        if precision == "int8":
            assert "allows" not in runner.note
        elif times["openvino_bf16"] < times["openvino_int8"]:
            why = "; bf16 (1 ms) ran faster than int8 (openvino_int8 2 ms), and int8 allows it"
            assert runner.note.endswith(why), runner.note
        else:
            why = "; bf16 (1.04 ms) ran as fast as (within 5%) int8 (openvino_int8 1 ms), and"
            assert runner.note.endswith(f"{why} int8 allows it"), runner.note
        assert runner.accuracy is not None and runner.accuracy.images == len(calibration)


def test_auto_int8_on_a_cpu_without_bf16_drops_the_bf16_engines(monkeypatch, tmp_path, setup):
    model, calibration, _ = setup
    monkeypatch.setattr(backends, "bf16_capable", lambda: False)
    fake_engines(monkeypatch, ["openvino_int8", "int8"])
    monkeypatch.setattr(auto, "measure", lambda runners, x: dict.fromkeys(runners, 1e-3))
    runner = optimize(
        model, precision="int8", example_input=X, calibration=calibration, cache_dir=tmp_path
    )
    assert runner.backend == "openvino_int8" and runner.precision == "int8"
    dropped = {c.name: c.error for c in runner.measurements if c.error}
    assert set(dropped) == {"openvino_bf16", "bf16"}
    assert all("needs a CPU with bfloat16 instructions" in e for e in dropped.values())


def test_fastest_breaks_a_tie_for_the_first_listed():
    assert auto.fastest({"eager": 2.0, "onnxruntime": 1.0, "openvino": 1.0}) == "onnxruntime"


class FakeClock:
    """auto's clock, advanced only by the fake runners' calls and the pauses (recorded)."""

    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        self.calls: dict[str, int] = {}
        monkeypatch.setattr(auto.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(auto.time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def runner(self, name: str, seconds: float, later: float | None = None, after: int = 0):
        """A runner taking ``seconds`` a call, or ``later`` after its first ``after`` calls."""
        self.calls[name] = 0

        def run(x):
            self.calls[name] += 1
            late = later is not None and self.calls[name] > after
            self.now += later if late else seconds

        return run


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return FakeClock(monkeypatch)


def test_measure_pauses_between_calls_and_counts_them_in_its_budget(clock):
    """Each call takes its runner's time, each pause its length; measure gives the medians of
    those times, and its rounds fit the budget with the pauses included."""
    runners = {"torch": clock.runner("torch", 0.004), "ort": clock.runner("ort", 0.001)}
    medians = auto.measure(runners, None)
    assert medians == pytest.approx({"torch": 0.004, "ort": 0.001})
    assert auto.fastest(medians) == "ort"
    # one round: 5 ms of calls + 2 pauses of 20 ms → 2 s / 45 ms = 44 rounds, capped at 30
    assert len(clock.pauses) == 2 * auto.MAX_ROUNDS and set(clock.pauses) == {auto.PAUSE_S}
    assert auto.PAUSE_S >= 0.02  # longer than torch's workers spin after a call


def test_a_near_tie_goes_to_a_runoff_of_the_two_fastest(clock, monkeypatch):
    """'ort' and 'openvino' tie in the first rounds (each 10 ms), then in the runoff 'openvino'
    takes 9 ms; the slow third is not timed again. The runoff's calls join the first rounds' in
    the medians, so openvino wins by its median over all its calls."""
    first_stage = auto.WARMUP + 10  # calls of each before the runoff (10 rounds, below)
    runners = {
        "torch": clock.runner("torch", 0.030),
        "ort": clock.runner("ort", 0.010),
        "openvino": clock.runner("openvino", 0.010, later=0.009, after=first_stage),
    }
    # one round: 50 ms of calls + 3 pauses of 20 ms = 110 ms → 10 rounds in a 1.1 s budget
    monkeypatch.setattr(auto, "BUDGET_S", 1.1)
    medians = auto.measure(runners, None)
    # the runoff: 20 ms of medians + 2 pauses = 60 ms a round → 0.55 s / 60 ms = 9 rounds
    assert clock.calls == {
        "torch": first_stage, "ort": first_stage + 9, "openvino": first_stage + 9
    }  # fmt: skip
    assert medians["torch"] == pytest.approx(0.030) and medians["ort"] == pytest.approx(0.010)
    assert medians["openvino"] == pytest.approx(0.010)  # 10 × 10 ms and 9 × 9 ms: median 10
    assert auto.fastest(medians) == "ort"  # a tie by median: the first listed


def test_a_runoff_can_overturn_the_first_rounds(clock, monkeypatch):
    """Four candidates; ort (10 ms) leads openvino (10.1 ms) in the first 10 rounds, but in the
    runoff of the two, 13 rounds, openvino takes 9 ms: its median over all 23 calls is 9 ms."""
    first_stage = auto.WARMUP + 10
    runners = {
        "eager": clock.runner("eager", 0.030),
        "fused": clock.runner("fused", 0.030),
        "ort": clock.runner("ort", 0.010),
        "openvino": clock.runner("openvino", 0.0101, later=0.009, after=first_stage),
    }
    # one round: 80.1 ms of calls + 4 pauses of 20 ms → 10 rounds in 1.61 s; the runoff:
    # 20.1 ms + 2 pauses → 0.805 s / 60.1 ms = 13 rounds
    monkeypatch.setattr(auto, "BUDGET_S", 1.61)
    medians = auto.measure(runners, None)
    assert clock.calls["ort"] == clock.calls["openvino"] == first_stage + 13
    assert medians["openvino"] == pytest.approx(0.009) and medians["ort"] == pytest.approx(0.010)
    assert auto.fastest(medians) == "openvino"


def test_no_runoff_when_the_fastest_leads_by_more_than_the_margin(clock):
    lead = 1 + auto.RUNOFF_MARGIN + 0.01
    runners = {"a": clock.runner("a", 0.010), "b": clock.runner("b", 0.010 * lead)}
    medians = auto.measure(runners, None)
    # 2 s / 61 ms: 30 rounds
    assert clock.calls["a"] == clock.calls["b"] == auto.WARMUP + auto.MAX_ROUNDS
    assert auto.fastest(medians) == "a"


# --- the command line ------------------------------------------------------------------------


def test_eval_precision_reports_the_change_on_the_whole_split(capsys, trained, monkeypatch):
    built = []
    build = cnnzoo.inference.optimize

    def keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(cnnzoo.inference, "optimize", keep)
    monkeypatch.setattr(cnnzoo.inference, "AUTO_REDUCED", {"int8": ("openvino_int8",)})
    code = main(["eval", "--weights", str(trained), "--dataset", "digits", "--precision", "int8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (runner,) = built
    assert runner.backend == "openvino_int8" and runner.chosen_by == "auto"
    assert "int8 against fp32 on 256 calibration images" in err  # the runner's own line
    line = next(ln for ln in out.splitlines() if ln.startswith("note: int8 top-1"))
    model = load_weights(None, trained)[0].eval()
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    x = torch.stack([data.val[i][0] for i in range(len(data.val))])
    agree = agreement(runner, model, x)[0]
    assert line.endswith(f"top-1 agreement with fp32 {100 * agree:.2f}%")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--precision", "int8"], "--precision int8 needs calibration images"),
        (["--backend", "openvino_int8"], "--backend openvino_int8 needs calibration images"),
        (["--backend", "eager", "--precision", "bf16"], "'eager' runs in fp32, not bf16"),
    ],
)
def test_predict_precision_errors_are_one_line(capsys, trained, tmp_path, argv, message):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("L", (32, 32), 128).save(image)
    code = main(["predict", "--weights", str(trained), str(image), *argv])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err


def test_compare_times_fp32_unless_asked_and_refuses_another_precision(tmp_path):
    from cnnzoo.compare.plan import CompareConfig, make_plan

    plan = make_plan(CompareConfig(out=str(tmp_path)))
    assert plan.precision == "fp32" and plan.settings()["bench_precision"] == "fp32"
    assert make_plan(CompareConfig(out=str(tmp_path), precision="int8")).precision == "int8"
    with pytest.raises(InvalidArgumentError) as err:
        make_plan(CompareConfig(out=str(tmp_path), precision="fp16"))
    assert "--precision" in one_line(err) and "'fp16'" in str(err.value)


def test_bench_refuses_an_unknown_precision_before_timing():
    from cnnzoo.bench import run_bench

    with pytest.raises(InvalidArgumentError) as err:
        run_bench(["lenet5"], ["auto"], [1], precision="fp8")
    assert "unknown precision 'fp8'" in one_line(err)
