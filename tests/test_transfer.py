"""Fine-tuning: freezing stages (frozen BatchNorm stays in eval mode), a separate head learning
rate, and training from a weight file."""

from __future__ import annotations

import json

import numpy as np
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


# --- embeddings ---------------------------------------------------------------------------------


def test_features_default_is_the_vector_the_classifier_reads():
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20", num_classes=4).train()
    x = torch.randn(5, 3, 16, 16)
    emb = cnnzoo.features(model, x, batch_size=2)
    assert model.training  # the mode is restored
    model.eval()
    torch.testing.assert_close(emb, model.forward_head(model.forward_features(x), pre_logits=True))
    # the classifier applied to the embedding gives the logits
    torch.testing.assert_close(model.fc(emb), model(x))


def test_features_of_a_stage_and_a_module_path():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1).eval()
    x = torch.randn(3, 1, 32, 32)
    seen = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: o})
        )
        for name in ("s4", "act3")
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    # a stage's output is its last module's: stage "c3" is C3, its activation and S4
    assert model.stage_map["c3"][-1] == "s4" and seen["s4"].shape == (3, 16, 5, 5)
    stage = cnnzoo.features(model, x, layer="c3")
    torch.testing.assert_close(stage, seen["s4"].mean(dim=(2, 3)))
    flat = cnnzoo.features(model, x, layer="act3", pool="flatten")  # a module path
    torch.testing.assert_close(flat, seen["act3"].flatten(1))
    # a dataset of (image, label) pairs works as well as a tensor
    pairs = torch.utils.data.TensorDataset(x, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(cnnzoo.features(model, pairs, layer="c3", batch_size=2), stage)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"layer": "conv9"}, "neither a stage"), ({"pool": "max"}, "pool='max'")]
)
def test_features_bad_arguments(kwargs, match):
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    with pytest.raises(InvalidArgumentError, match=match):
        cnnzoo.features(model, torch.randn(1, 1, 32, 32), **kwargs)


def test_features_of_a_plain_module_need_a_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    x = torch.randn(3, 1, 8, 8)
    with pytest.raises(InvalidArgumentError, match=r"Sequential is not a zoo model.*layer="):
        cnnzoo.features(model, x)
    expected = model(x).mean(dim=(2, 3))  # the ReLU's (3, 2, 6, 6) output averaged over space
    torch.testing.assert_close(cnnzoo.features(model, x, layer="1"), expected)


# --- does transfer matter? ------------------------------------------------------------------------

TRANSFER_LAYER = "c3"  # the stage C3 → tanh → S4: 16 maps of 5×5, averaged over space
SHOTS = 10  # labelled images per new class


def _digits_split(dataset, low: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    keep = (dataset.labels >= low) & (dataset.labels < high)
    return images[keep], dataset.labels[keep]


def _pretrain_lenet5(images, labels, seed: int, epochs: int = 10):
    """LeNet-5 on digits 0–4: SGD with Nesterov momentum, one-cycle schedule, light augmentation."""
    from cnnzoo.data.transforms import ShiftRotate

    torch.manual_seed(seed)
    model = cnnzoo.create_model("lenet5", num_classes=5, in_chans=1)
    optimizer = torch.optim.SGD(
        model.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    steps = epochs * -(-len(images) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, total_steps=steps)
    augment = ShiftRotate(4, 10)
    for _ in range(epochs):
        for idx in torch.randperm(len(images)).split(32):
            x = torch.stack([augment(img) for img in images[idx]])
            loss = nn.functional.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model


def _few_shot_accuracy(model, train, val, seed: int) -> float:
    """A logistic-regression head on standardised frozen features of SHOTS images per class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (xb, yb), (xv, yv) = train, val
    rng = np.random.default_rng(seed)
    pick = np.concatenate(
        [rng.choice(np.flatnonzero(yb.numpy() == c), SHOTS, replace=False) for c in range(5, 10)]
    )
    fit_x = cnnzoo.features(model, xb[pick], layer=TRANSFER_LAYER).numpy()
    val_x = cnnzoo.features(model, xv, layer=TRANSFER_LAYER).numpy()
    scaler = StandardScaler().fit(fit_x)
    head = LogisticRegression(max_iter=3000).fit(scaler.transform(fit_x), yb[pick].numpy())
    return float((head.predict(scaler.transform(val_x)) == yv.numpy()).mean())


@pytest.mark.slow
def test_pretrained_features_beat_random_ones_on_new_classes():
    """Pretrain on digits 0–4, then fit a head on 10 labelled images of each of 5–9 on frozen
    features of stage C3 (``TRANSFER_LAYER``); a randomly initialised frozen LeNet-5 is the
    baseline. Over 3 seeds the
    mean gain must exceed twice its standard deviation (measured: +8.3 ± 2.0 points)."""
    from cnnzoo.data import load_dataset

    data = load_dataset("digits", image_size=32)
    old = _digits_split(data.train, 0, 5)
    new_train, new_val = _digits_split(data.train, 5, 10), _digits_split(data.val, 5, 10)
    gains = []
    for seed in range(3):
        pretrained = _pretrain_lenet5(*old, seed)
        torch.manual_seed(100 + seed)
        random = cnnzoo.create_model("lenet5", num_classes=5, in_chans=1)
        gains.append(
            _few_shot_accuracy(pretrained, new_train, new_val, seed)
            - _few_shot_accuracy(random, new_train, new_val, seed)
        )
    gains = np.array(gains)
    assert gains.mean() > 2 * gains.std(ddof=1), gains
    assert gains.mean() > 0.03, gains  # and by a margin worth having: 3 points or more
