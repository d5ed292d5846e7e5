"""Evaluation against hand-computed numbers: a stub model whose logits are fixed per image.

Each image's logits are the logarithms of fixed probabilities given by the rank of each class,
so that top-1, top-5, the loss (−log p of the true class's rank), per-class accuracy and the
confusion matrix can be written down by hand.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.data.datasets import ArrayDataset
from cnnzoo.errors import CnnzooError, DataError, InvalidArgumentError
from cnnzoo.evaluate import EvalResult, evaluate

RANK_PROBS = (0.4, 0.2, 0.15, 0.1, 0.08, 0.04, 0.03)  # probability of the class at rank r
NAMES = ["zero", "one", "two", "three", "four", "five", "six"]
# (true label, predicted class, rank of the true class)
CASES = [
    (0, 0, 0),
    (0, 0, 0),
    (0, 2, 1),
    (1, 1, 0),
    (1, 3, 5),  # not in the top 5
    (2, 0, 2),
    (3, 3, 0),
    (4, 5, 6),  # not in the top 5
    (5, 6, 4),  # fifth: in the top 5
    (6, 6, 0),
]


def _logits(label: int, predicted: int, rank: int, classes: int = 7) -> torch.Tensor:
    order = [predicted] if rank else [label]
    rest = [c for c in range(classes) if c not in (label, predicted)]
    order += rest
    if rank:
        order.insert(rank, label)
    probs = torch.empty(classes, dtype=torch.float64)
    probs[order] = torch.tensor(RANK_PROBS[:classes], dtype=torch.float64)
    return probs.log().float()


class Stub(nn.Module):
    """Image ``i`` is the tensor ``[i]``; its logits are row ``i`` of a fixed table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.num_classes = table.shape[1]
        self.seen_training: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        return self.table[x[:, 0].long()]


def _data(cases):
    table = torch.stack([_logits(*case) for case in cases])
    dataset = [(torch.tensor([float(i)]), label) for i, (label, _, _) in enumerate(cases)]
    return Stub(table), dataset


def test_numbers_match_the_hand_computation(tmp_path):
    model, dataset = _data(CASES)
    model.train()
    result = evaluate(model, dataset, num_classes=7, class_names=NAMES, batch_size=3)

    assert result.images == 10
    assert result.top1 == pytest.approx(5 / 10)
    assert (result.k, result.topk) == (5, pytest.approx(8 / 10))
    hand_loss = -(5 * math.log(0.4) + math.log(0.2) + math.log(0.04) + math.log(0.15)
                  + math.log(0.03) + math.log(0.08)) / 10  # fmt: skip
    assert result.loss == pytest.approx(hand_loss, rel=1e-6)
    expected = torch.zeros(7, 7, dtype=torch.int64)
    for true, pred, count in [
        (0, 0, 2), (0, 2, 1), (1, 1, 1), (1, 3, 1), (2, 0, 1),
        (3, 3, 1), (4, 5, 1), (5, 6, 1), (6, 6, 1),
    ]:  # fmt: skip
        expected[true, pred] = count
    assert result.confusion.dtype == torch.int64
    assert torch.equal(result.confusion, expected)
    assert result.per_class_count == [3, 2, 1, 1, 1, 1, 1]
    assert result.per_class_correct == [2, 1, 0, 1, 0, 0, 1]
    assert result.per_class_accuracy == pytest.approx([2 / 3, 1 / 2, 0, 1, 0, 0, 1])
    assert result.worst_classes(5) == [2, 4, 5, 1, 0]
    assert model.seen_training == [False] * 4  # 10 images in batches of 3, all in eval mode
    assert model.training  # the mode is restored


def test_dict_lines_and_confusion_image(tmp_path):
    model, dataset = _data(CASES)
    result = evaluate(model, dataset, num_classes=7, class_names=NAMES)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["top1"] == pytest.approx(0.5)
    assert data["topk"] == {"k": 5, "accuracy": pytest.approx(0.8)}
    assert data["confusion"][0] == [2, 0, 1, 0, 0, 0, 0]
    assert data["per_class"][1] == {
        "index": 1, "name": "one", "images": 2, "correct": 1, "accuracy": 0.5,
    }  # fmt: skip

    text = "\n".join(result.lines(worst=2))
    assert "top-1 accuracy: 50.00% (5/10)" in text
    assert "top-5 accuracy: 80.00%" in text
    assert "two: 0.00% (0/1)" in text and "four: 0.00% (0/1)" in text
    assert "five" not in text  # only the two weakest

    path = tmp_path / "confusion.png"
    result.save_confusion(path, title="stub")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_few_classes_use_k_equal_to_the_classes():
    cases = [(0, 0, 0), (1, 2, 2), (2, 2, 0)]
    table = torch.stack([_logits(*c, classes=3) for c in cases])
    dataset = [(torch.tensor([float(i)]), c[0]) for i, c in enumerate(cases)]
    result = evaluate(Stub(table), dataset, num_classes=3, class_names=["a", "b", "c"])
    assert (result.k, result.topk, result.top1) == (3, 1.0, pytest.approx(2 / 3))
    assert "top-3 accuracy: 100.00% (k = the number of classes" in "\n".join(result.lines())


def test_a_class_with_no_images_has_no_accuracy():
    model, dataset = _data([c for c in CASES if c[0] != 6])
    result = evaluate(model, dataset, num_classes=7, class_names=NAMES)
    assert result.per_class_accuracy[6] is None
    assert 6 not in result.worst_classes(7)
    assert json.loads(json.dumps(result.to_dict()))["per_class"][6]["accuracy"] is None


def test_a_real_model_agrees_with_its_own_forward():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1).eval()
    images = torch.rand(20, 1, 32, 32)
    labels = torch.arange(20) % 10
    dataset = ArrayDataset(images, labels, transform=lambda x: x)
    result = evaluate(model, dataset, num_classes=10, class_names=[str(i) for i in range(10)],
                      batch_size=8)  # fmt: skip
    with torch.no_grad():
        logits = model(images)
    assert result.top1 == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    in_top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1)
    assert result.topk == pytest.approx(in_top5.float().mean().item())
    ce = nn.functional.cross_entropy(logits, labels).item()
    assert result.loss == pytest.approx(ce, rel=1e-5)


def _one_line(err: CnnzooError) -> None:
    assert "\n" not in str(err)


def test_bad_inputs_raise_one_line():
    model, dataset = _data(CASES)
    bad = [
        (InvalidArgumentError, "7 classes", dict(class_names=NAMES[:6])),
        (InvalidArgumentError, "batch_size", dict(batch_size=0)),
        (InvalidArgumentError, "num_workers", dict(num_workers=-1)),
    ]
    for error, match, kwargs in bad:
        with pytest.raises(error, match=match) as info:
            evaluate(model, dataset, **{"num_classes": 7, "class_names": NAMES, **kwargs})
        _one_line(info.value)
    with pytest.raises(InvalidArgumentError, match="the model has 7 classes, the dataset 8"):
        evaluate(model, dataset, num_classes=8, class_names=[*NAMES, "seven"])
    with pytest.raises(DataError, match="no images") as info:
        evaluate(model, [], num_classes=7, class_names=NAMES)
    _one_line(info.value)
    with pytest.raises(DataError, match="label 9 is outside 0…6") as info:
        evaluate(model, [*dataset[:3], (torch.tensor([0.0]), 9)], num_classes=7, class_names=NAMES)
    _one_line(info.value)


def test_result_is_a_plain_dataclass():
    confusion = torch.tensor([[3, 1], [0, 4]])
    result = EvalResult(8, ["a", "b"], 7 / 8, 2, 1.0, 0.1, confusion)
    assert result.per_class_accuracy == [0.75, 1.0] and result.worst_classes() == [0, 1]


# --- against a reference model (int8 against fp32) --------------------------------------------


class _Logged(list):
    """A dataset that logs each item it hands out, in one log with the models' forwards."""

    def __init__(self, items, log):
        super().__init__(items)
        self.log = log

    def __getitem__(self, i):
        self.log.append("get")
        return super().__getitem__(i)


def test_a_reference_gives_the_change_and_the_agreement_by_hand():
    model, dataset = _data(CASES)  # top-1 5/10: images 0, 1, 3, 6, 9 right
    # The reference predicts the true class everywhere but on images 0 and 3 (rank 1 there).
    ref_cases = [(t, t, 0) for t, _, _ in CASES]
    ref_cases[0], ref_cases[3] = (0, 2, 1), (1, 4, 1)
    reference, _ = _data(ref_cases)  # top-1 8/10
    log: list[str] = []
    for stub in (model, reference):
        stub.register_forward_pre_hook(lambda m, args: log.append(f"forward {len(args[0])}"))
    data = _Logged(dataset, log)
    result = evaluate(model, data, num_classes=7, class_names=NAMES, batch_size=3,
                      reference=reference)  # fmt: skip
    assert result.top1 == pytest.approx(0.5) and result.reference.top1 == pytest.approx(0.8)
    assert result.top1_change == pytest.approx(-0.3)
    # Model vs reference top-1, images 0-9: 0/2, 0/0, 2/0, 1/4, 3/1, 0/2, 3/3, 5/4, 6/5, 6/6.
    assert result.top1_agreement == pytest.approx(3 / 10)
    assert result.comparison("int8", "fp32") == (
        "int8 top-1 50.00% vs fp32 80.00% (-30.00 points); top-1 agreement with fp32 30.00%"
    )
    ref = json.loads(json.dumps(result.to_dict()))["reference"]
    assert ref["top1"] == pytest.approx(0.8) and ref["top1_agreement"] == pytest.approx(0.3)
    assert ref["top1_change"] == pytest.approx(-0.3)
    # Streamed: two passes in batches, never more than one batch of images held ahead of a
    # forward pass (the old way stacked the whole split, after two full passes).
    assert log.count("get") == 2 * len(dataset)
    gets_before_forward = [0]
    for event in log:
        if event == "get":
            gets_before_forward[-1] += 1
        else:
            assert gets_before_forward[-1] == int(event.split()[1])
            gets_before_forward.append(0)
    assert gets_before_forward[-1] == 0


def test_the_reference_figures_equal_the_old_computation():
    import copy

    from cnnzoo.inference import agreement

    torch.manual_seed(0)
    fp32 = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1).eval()
    changed = copy.deepcopy(fp32)  # stands in for int8: the same network, other outputs
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.5 * torch.randn_like(p))
    images, labels = 3 * torch.randn(40, 1, 32, 32), torch.arange(40) % 10
    dataset = ArrayDataset(images, labels, transform=lambda x: x)
    kwargs = dict(num_classes=10, class_names=[str(i) for i in range(10)], batch_size=16)
    result = evaluate(changed, dataset, reference=fp32, **kwargs)
    # The old computation: two evaluations, then the whole split stacked for the agreement.
    old, old_ref = evaluate(changed, dataset, **kwargs), evaluate(fp32, dataset, **kwargs)
    old_agree = agreement(changed, fp32, torch.stack([dataset[i][0] for i in range(40)]))[0]
    assert result.top1 == old.top1 and result.reference.top1 == old_ref.top1
    assert result.reference.loss == old_ref.loss and torch.equal(result.confusion, old.confusion)
    assert result.top1_agreement == pytest.approx(old_agree, abs=1e-12)
    assert 0 < result.top1_agreement < 1  # the premise: the two models differ somewhere


def test_a_comparison_needs_a_reference():
    model, dataset = _data(CASES)
    result = evaluate(model, dataset, num_classes=7, class_names=NAMES)
    assert result.reference is None and result.top1_change is None
    assert "reference" not in result.to_dict()
    with pytest.raises(InvalidArgumentError, match="pass reference= to evaluate") as info:
        result.comparison("int8")
    _one_line(info.value)
    wrong = Stub(torch.zeros(10, 5))
    with pytest.raises(InvalidArgumentError, match="the model has 5 classes, the dataset 7"):
        evaluate(model, dataset, num_classes=7, class_names=NAMES, reference=wrong)
