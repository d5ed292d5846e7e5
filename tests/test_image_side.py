"""The one rule for the side a model trains at (``ModelSpec.fit_side``), shared by ``train``
(the data's native side) and ``compare`` (its common side); checked against each model's valid
sizes and against both commands."""

from __future__ import annotations

import pytest

import cnnzoo
from cnnzoo.analysis import check_input
from cnnzoo.compare.plan import CompareConfig, make_plan
from cnnzoo.training import trainer
from cnnzoo.training.config import TrainConfig, training_options

MODELS = cnnzoo.list_models()


def _sides(spec) -> list[int]:
    low, high = spec.size_range(**training_options(spec))
    sides = {1, 8, 16, 28, 32, 224, low - 1, low, low + 1, 600}
    if high is not None:
        sides |= {high - 1, high, high + 1}
    return sorted(s for s in sides if s >= 1)


@pytest.mark.parametrize("name", MODELS)
def test_the_side_is_kept_when_taken_and_valid_when_moved(name):
    spec = cnnzoo.get_spec(name)
    options = training_options(spec)
    low, high = spec.size_range(**options)
    for side in _sides(spec):
        got = spec.fit_side(side, **options)
        check_input(name, (spec.input_size[0], got, got), **options)  # a side the model takes
        if low <= side and (high is None or side <= high):
            assert got == side
        else:
            assert got == (spec.input_size[1] if high is not None else low)


def test_by_hand():
    side = {n: cnnzoo.get_spec(n).fit_side for n in ("googlenet_paper", "alexnet", "lenet5", "mlp")}
    assert side["googlenet_paper"](32, aux_logits=True) == 224  # 223-270 with aux: the paper's
    assert side["googlenet_paper"](300, aux_logits=True) == 224
    assert side["googlenet_paper"](250, aux_logits=True) == 250
    assert side["alexnet"](32) == 63  # no fixed size: its minimum
    assert side["lenet5"](16) == 32 and side["lenet5"](34) == 34 and side["lenet5"](36) == 32
    assert side["mlp"](16) == 32


def test_train_and_compare_give_the_same_side(tmp_path, monkeypatch):
    plan = make_plan(CompareConfig(models=MODELS, out=str(tmp_path)))  # the 32-pixel side
    for name in MODELS:
        spec = cnnzoo.get_spec(name)
        options = trainer._model_options(TrainConfig(model=name), spec)
        assert plan.sizes[name] == spec.fit_side(32, **options), name
        for side in _sides(spec):
            monkeypatch.setattr(trainer, "native_side", lambda dataset, side=side: side)
            config = TrainConfig(model=name)
            trained = trainer.resolve_image_size(config, spec, options)
            assert trained == spec.fit_side(side, **options), (name, side)
