"""``cnnzoo train --amp``: bfloat16 autocast on the CPU, training and validation; the one-line
refusal on a CPU without bf16; checkpoints and resume across the flag's toggles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo import create_model
from cnnzoo.cli import main
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.inference import backends
from cnnzoo.training.amp import guard_bf16_convolutions
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.distributed import Dist
from cnnzoo.training.loop import evaluate, train_one_epoch
from cnnzoo.training.optim import build_optimizer, build_scheduler
from cnnzoo.training.trainer import fit

# The one skip the suite allows: bf16 training needs the instructions (test_precision's rule);
# the refusal on a CPU without them runs everywhere.
needs_bf16 = pytest.mark.skipif(
    not backends.bf16_capable(), reason="this CPU has no bfloat16 instructions"
)

BASE = TrainConfig(
    model="lenet5", dataset="digits", epochs=2, batch_size=64, device="cpu", quiet=True, amp=True
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """LeNet-5 gains nothing from more threads, and on a busy machine they cost (spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toggled(tmp_path_factory) -> tuple[Path, list]:
    """LeNet-5 on the digits, one epoch at a time: --amp, resumed without it, resumed with it."""
    out = tmp_path_factory.mktemp("amp") / "run"
    results = []
    for epochs, amp in ((1, True), (2, False), (3, True)):
        config = replace(BASE, epochs=epochs, amp=amp, out=str(out), resume=epochs > 1)
        results.append(fit(config))
    # and a fourth epoch without epoch checkpoints (what compare does for VGG and AlexNet)
    results.append(fit(replace(config, epochs=4, epoch_checkpoints=False)))
    return out, results


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@needs_bf16
def test_amp_trains_on_the_cpu_and_resumes_across_its_toggles(toggled):
    out, results = toggled
    rows = _history(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and len(results[2].history) == 3
    assert rows[2]["train_loss"] < rows[1]["train_loss"] < rows[0]["train_loss"] < 2.3  # ln 10
    assert rows[-1]["val_acc"] > 0.5  # 10 classes: chance is 0.1
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["amp"] is True
    assert [r["changed"].get("amp") for r in record["resumes"]] == [
        [True, False], [False, True], None
    ]  # fmt: skip
    assert any(n.startswith("--amp: bfloat16 autocast") for n in results[0].notes)
    assert any(n.startswith("--amp without --channels-last") for n in results[0].notes)
    assert not any(n.startswith("--amp") for n in results[1].notes)
    # Autocast computes in bf16 and keeps the weights in fp32: checkpoint and weights are fp32.
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 3  # the fourth epoch wrote none (--no-epoch-checkpoints)
    assert len(results[3].history) == 4 and (out / "model.safetensors").is_file()
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float32}
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def _conv_dtypes(model: nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


@needs_bf16
@pytest.mark.parametrize("amp", [False, True])
def test_the_forward_runs_in_bf16_in_training_and_validation(amp):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    seen = _conv_dtypes(model)
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 32, 32), torch.randint(10, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    optimizer = build_optimizer(model, "adamw", lr=1e-2)
    scheduler = build_scheduler(optimizer, "constant", epochs=1, steps_per_epoch=2)
    cpu, one = torch.device("cpu"), Dist()
    losses = [
        train_one_epoch(
            model, loader, optimizer, scheduler, epoch=e, device=cpu, dist=one, amp=amp
        ).loss
        for e in range(1, 11)
    ]
    assert losses[-1] < 0.5 * losses[0]  # 8 random images are learnt by heart
    want = torch.bfloat16 if amp else torch.float32
    assert seen and set(seen) == {want}  # 2 convolutions × 2 steps × 10 passes
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # fp32 master weights
    seen.clear()
    stats = evaluate(model, loader, 10, device=cpu, dist=one, amp=amp)
    assert seen and set(seen) == {want}
    assert stats.images == 8 and 0.0 <= stats.acc <= 1.0


def test_amp_without_bf16_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backends, "bf16_capable", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(InvalidArgumentError) as info:
        fit(replace(BASE, out=str(out)))
    text = str(info.value)
    assert "\n" not in text and "--amp" in text and "no bfloat16 instructions" in text
    assert not (out / "last.pt").exists() and not (out / "config.json").exists()
    argv = ["train", "--model", "lenet5", "--amp", "--device", "cpu", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bfloat16 instructions" in err and "Traceback" not in err


# --- the guard around torch's bf16 convolution fault (cnnzoo.training.amp) -------------------


def _conv_grads(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor, amp: bool) -> torch.Tensor:
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y = conv(x)
    y.float().backward(g)
    return conv.weight.grad.clone()


@needs_bf16
@pytest.mark.parametrize("size", [(1, 1), (2, 1)])
def test_a_guarded_strided_convolution_on_a_one_pixel_map_gets_the_fp32_weight_gradient(size):
    """The shapes where torch's bf16 backward returns garbage (NaN or ~1e37 in 5-100% of calls,
    measured): with the guard, 20 of 20 weight gradients equal fp32 autograd's."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False)
    guard_bf16_convolutions(conv)
    for _ in range(20):
        x = torch.randn(8, 32, *size)
        g = torch.randn(8, 32, 1, 1)
        got = _conv_grads(conv, x, g, amp=True)
        want = _conv_grads(conv, x, g, amp=False)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_bf16
def test_the_guard_keeps_bf16_where_torch_is_right():
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1)
    guard_bf16_convolutions(conv)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 8, 2, 2)).dtype == torch.bfloat16
        assert conv(torch.randn(2, 8, 1, 1)).dtype == torch.float32
    assert conv(torch.randn(2, 8, 1, 1)).dtype == torch.float32  # no autocast: as always


def test_the_guard_changes_only_the_convolutions_at_risk_and_nothing_they_hold():
    """ResNet-18's at-risk convolutions: the 7×7 stem and the first 3×3 of stages 2-4 (strided,
    ungrouped, wider than 1×1); not the 1×1 downsampling ones, not MobileNetV2's depthwise ones."""
    from cnnzoo.training.amp import Bf16SafeConv2d

    model = create_model("resnet18", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model.eval()(x)
    assert guard_bf16_convolutions(model) == 4
    guarded = sorted(n for n, m in model.named_modules() if isinstance(m, Bf16SafeConv2d))
    assert guarded == ["conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(model(x), want)
    mobile = create_model("mobilenet_v2", num_classes=10)
    depthwise = [m for m in mobile.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    guard_bf16_convolutions(mobile)
    assert depthwise and not any(isinstance(m, Bf16SafeConv2d) for m in depthwise)


def test_training_with_amp_on_the_cpu_guards_the_model():
    from cnnzoo.training.amp import Bf16SafeConv2d
    from cnnzoo.training.trainer import _place

    cpu = torch.device("cpu")
    for amp in (True, False):
        config = replace(BASE, model="resnet18", amp=amp, channels_last=True)
        model = _place(create_model("resnet18", num_classes=10), config, cpu)
        assert isinstance(model.layer4[0].conv1, Bf16SafeConv2d) is amp
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
