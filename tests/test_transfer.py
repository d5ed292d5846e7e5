"""Fine-tuning: freezing stages (frozen BatchNorm stays in eval mode), a separate head learning
rate, and training from a weight file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.weights import load_weights


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


def test_fine_tuning_normalises_with_the_weights_mean_and_std(tmp_path, capsys):
    from cnnzoo.training.trainer import _save_weights

    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    path = tmp_path / "w.safetensors"
    metadata = {"model": "lenet5", "in_chans": "1", "image_size": "32", "mean": "[0.25]",
                "std": "[0.5]", "class_names": json.dumps([str(i) for i in range(10)])}  # fmt: skip
    _save_weights(model, path, metadata)
    out = tmp_path / "ft"
    args = ["train", "--model", "lenet5", "--epochs", "1", "--weights", str(path), "--out"]
    assert main([*args, str(out)]) == 0
    assert "normalised as the weights were trained (cnnzoo export): mean (0.250), std (0.500)" in (
        capsys.readouterr().out
    )
    run = json.loads((out / "config.json").read_text())
    assert (run["dataset"]["mean"], run["dataset"]["std"]) == ([0.25], [0.5])
    # and the new export records them, so evaluation later prepares images the same way
    loaded = load_weights(None, out / "model.safetensors")[0]
    assert (loaded.pretrained_cfg.mean, loaded.pretrained_cfg.std) == ((0.25,), (0.5,))
