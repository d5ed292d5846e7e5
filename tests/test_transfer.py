"""Fine-tuning: freezing stages (frozen BatchNorm stays in eval mode), a separate head learning
rate, and training from a weight file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import InvalidArgumentError


def _trainable(model: nn.Module) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad}


def test_freeze_backbone_leaves_only_the_classifier():
    model = cnnzoo.create_model("resnet20")
    assert model.freeze("backbone") == ["stem", "layer1", "layer2", "layer3"]
    assert _trainable(model) == {"fc.weight", "fc.bias"}
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # statistics stay fixed while training
    assert model.fc.training and model.training


def test_frozen_batchnorm_statistics_do_not_move_in_training():
    model = cnnzoo.create_model("resnet20", num_classes=3)
    model.freeze("stages:2")  # stem and layer1
    before = model.bn1.running_mean.clone()
    unfrozen_before = model.layer2[0].bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 16, 16))
    assert torch.equal(model.bn1.running_mean, before)
    assert not torch.equal(model.layer2[0].bn1.running_mean, unfrozen_before)
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())


@pytest.mark.parametrize("what", ["stages:0", "stages:9", "head", "stages:x"])
def test_bad_freeze_values_are_refused(what):
    with pytest.raises(InvalidArgumentError, match="--freeze"):
        cnnzoo.create_model("resnet20").freeze(what)


def test_fine_tune_from_a_weight_file_with_a_frozen_backbone(tmp_path, capsys):
    base = ["train", "--model", "lenet5", "--epochs", "1", "--augment", "none"]
    assert main([*base, "--out", str(tmp_path / "pre"), "--quiet"]) == 0
    start = load_file(tmp_path / "pre" / "model.safetensors")
    code = main([*base, "--out", str(tmp_path / "ft"), "--weights",
                 str(tmp_path / "pre" / "model.safetensors"), "--freeze", "backbone",
                 "--head-lr", "0.01"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "weights " in out and "loaded" in out  # the load report is printed
    assert "frozen (no gradients, BatchNorm statistics fixed): c1, c3, c5, f6" in out
    end = load_file(tmp_path / "ft" / "model.safetensors")
    for key in start:
        if key.startswith("output."):
            assert not torch.equal(start[key], end[key]), key  # the head trained
        else:
            assert torch.equal(start[key], end[key]), key  # the backbone did not move
