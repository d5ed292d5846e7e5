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
