"""The named optimizers and schedules: update rules by hand, parameter groups, schedule shapes.

Every optimizer is checked against its update rule written out here in NumPy, in the form torch
documents, on f(w) = ½ wᵀAw − bᵀw (gradient Aw − b), so a change of torch's arithmetic or of our
hyper-parameters shows up as a mismatch.
"""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.training import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler

A = np.array([[3.0, 0.5, 0.2], [0.5, 2.0, 0.3], [0.2, 0.3, 1.0]])  # symmetric positive definite
B = np.array([1.0, -2.0, 0.5])
W0 = np.array([0.7, -0.3, 1.2])
LR = 0.05
MOMENTUM = 0.9
STEPS = 5


def grad(w: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return scale * (A @ w - B)


class Quadratic(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        # float64 so that the comparison measures the update rule, not float32 rounding.
        self.weight = nn.Parameter(torch.tensor(W0, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        a, b, w = torch.tensor(A), torch.tensor(B), self.weight
        return self.scale * (0.5 * w @ a @ w - b @ w)


def by_hand(name: str, wd: float, scale: float = 1.0, eps_inside: bool = False) -> list[np.ndarray]:
    """The iterates w_1..w_STEPS of optimizer ``name``, as torch's documentation writes it.

    ``eps_inside`` moves ε under the square root (TensorFlow's RMSprop), only to show that the
    tests can tell the two placements apart.
    """

    def root(x: np.ndarray, eps: float) -> np.ndarray:
        return np.sqrt(x + eps) if eps_inside else np.sqrt(x) + eps

    w = W0.copy()
    buf = m = v = np.zeros(3)
    out = []
    for t in range(1, STEPS + 1):
        g = grad(w, scale)
        if name != "adamw":
            g = g + wd * w  # L2 penalty: the decay is part of the gradient
        if name == "sgd":
            w = w - LR * g
        elif name in ("momentum", "nesterov"):
            buf = g if t == 1 else MOMENTUM * buf + g  # dampening 0
            w = w - LR * (g + MOMENTUM * buf if name == "nesterov" else buf)
        elif name == "adagrad":
            v = v + g * g
            w = w - LR * g / root(v, 1e-10)
        elif name == "rmsprop":
            v = 0.99 * v + 0.01 * g * g
            w = w - LR * g / root(v, 1e-8)
        else:  # adam, adamw
            if name == "adamw":
                w = w * (1 - LR * wd)  # decoupled: shrink w, leave the moments alone
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)  # bias correction
            w = w - LR * m_hat / root(v_hat, 1e-8)
        out.append(w)
    return out


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_rule_matches_hand_written(name: str, wd: float) -> None:
    model = Quadratic()
    opt = build_optimizer(model, name, lr=LR, momentum=MOMENTUM, weight_decay=wd)
    expected = by_hand(name, wd)
    for t in range(STEPS):
        opt.zero_grad()
        model().backward()
        opt.step()
        got = model.weight.detach().numpy()
        np.testing.assert_allclose(got, expected[t], rtol=1e-6, atol=0, err_msg=f"step {t + 1}")
    # The iterates must move, or the comparison above proves nothing.
    assert np.abs(expected[-1] - W0).max() > 1e-2


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam", "adamw"])
def test_eps_outside_the_square_root(name: str) -> None:
    """With gradients of ~1e-9, ε matters, so its placement is checked too."""
    scale = 1e-9
    model = Quadratic(scale)
    opt = build_optimizer(model, name, lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        model().backward()
        opt.step()
    got = model.weight.detach().numpy()
    np.testing.assert_allclose(got, by_hand(name, 0.0, scale)[-1], rtol=1e-6, atol=0)
    inside = by_hand(name, 0.0, scale, eps_inside=True)[-1]
    assert np.abs(got - inside).max() > 0.5 * np.abs(got - W0).max()
    assert np.abs(got - W0).max() > 1e-4  # moved


def test_nesterov_is_sutskever_look_ahead_form() -> None:
    """torch's NAG iterate w_t is Sutskever et al.'s θ_t + μ v_t (docs/optimizers.md)."""
    model = Quadratic()
    opt = build_optimizer(model, "nesterov", lr=LR, momentum=MOMENTUM)
    theta, vel = W0.copy(), np.zeros(3)
    for _ in range(STEPS):
        vel = MOMENTUM * vel - LR * grad(theta + MOMENTUM * vel)  # gradient at the look-ahead
        theta = theta + vel
        opt.zero_grad()
        model().backward()
        opt.step()
        got = model.weight.detach().numpy()
        np.testing.assert_allclose(got, theta + MOMENTUM * vel, rtol=1e-6, atol=0)


def test_adamw_differs_from_adam_with_l2() -> None:
    """Same weight_decay, different method: the decay is not scaled by Adam's denominator."""
    assert not np.allclose(by_hand("adam", 0.1)[-1], by_hand("adamw", 0.1)[-1], rtol=1e-4)


class Small(nn.Module):
    """conv + BN + a nested linear head, with get_classifier() like every ZooModel."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.norm = nn.LayerNorm(4)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.GroupNorm(2, 4), nn.Linear(4, 3))

    def get_classifier(self) -> nn.Module:
        return self.head[2]


def group_names(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, str]:
    """Parameter name → name of the group that holds it."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["name"] for g in opt.param_groups for p in g["params"]}


def test_no_decay_on_norm_layers_and_biases() -> None:
    model = Small()
    opt = build_optimizer(model, "momentum", lr=0.1, weight_decay=5e-4)
    assert group_names(opt, model) == {
        "features.0.weight": "decay",
        "features.0.bias": "no_decay",
        "features.1.weight": "no_decay",
        "features.1.bias": "no_decay",
        "norm.weight": "no_decay",
        "norm.bias": "no_decay",
        "head.0.weight": "decay",
        "head.0.bias": "no_decay",
        "head.1.weight": "no_decay",
        "head.1.bias": "no_decay",
        "head.2.weight": "decay",
        "head.2.bias": "no_decay",
    }
    decays = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decays == {"decay": 5e-4, "no_decay": 0.0}


def test_zero_gradient_step_shrinks_only_decayed_weights() -> None:
    model = Small()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.5)  # BN starts at weight 1, bias 0: make every change visible
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["features.0.weight"], before["features.0.weight"] * 0.95)
    for name in ("features.0.bias", "features.1.weight", "features.1.bias", "norm.weight"):
        assert torch.equal(after[name], before[name]), name


def test_frozen_parameters_are_left_out() -> None:
    model = Small()
    model.features.requires_grad_(False)
    opt = build_optimizer(model, "adam", lr=1e-3, weight_decay=0.1)
    assert not any(name.startswith("features.") for name in group_names(opt, model))
    assert len(group_names(opt, model)) == 8


def test_head_lr_gives_four_groups() -> None:
    model = Small()
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, head_lr=1e-2)
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["decay", "no_decay", "head_decay", "head_no_decay"]
    assert [(g["lr"], g["weight_decay"]) for g in groups.values()] == [
        (1e-3, 0.05),
        (1e-3, 0.0),
        (1e-2, 0.05),
        (1e-2, 0.0),
    ]
    membership = group_names(opt, model)
    assert membership["head.2.weight"] == "head_decay"
    assert membership["head.2.bias"] == "head_no_decay"
    assert membership["head.0.weight"] == "decay"  # hidden head layers are backbone


def test_head_lr_on_a_zoo_model_covers_exactly_its_classifier() -> None:
    model = create_model("lenet5", num_classes=10, in_chans=1)
    opt = build_optimizer(model, "momentum", lr=0.01, head_lr=0.1)
    head = {id(p) for p in model.get_classifier().parameters()}
    for group in opt.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert in_head == {group["name"].startswith("head_")}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_without_head_lr_no_head_groups_and_empty_groups_omitted() -> None:
    opt = build_optimizer(nn.Linear(3, 2, bias=False), "sgd", lr=0.1)
    assert [g["name"] for g in opt.param_groups] == ["decay"]


# --- schedules -------------------------------------------------------------------------------

EPOCHS, SPE = 4, 5
TOTAL = EPOCHS * SPE


def run_schedule(name: str, warmup: float = 0.0, *, head_lr: float | None = None) -> list:
    """The learning rates of every group at each of the TOTAL steps, and after the last."""
    opt = build_optimizer(Small(), "momentum", lr=0.2, head_lr=head_lr)
    sched = build_scheduler(opt, name, epochs=EPOCHS, steps_per_epoch=SPE, warmup_epochs=warmup)
    lrs = []
    for _ in range(TOTAL):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


def test_constant_schedule() -> None:
    assert {lr for step in run_schedule("constant") for lr in step} == {0.2}


def test_step_schedule_drops_at_half_and_three_quarters() -> None:
    lrs = [step[0] for step in run_schedule("step")]
    assert lrs[: TOTAL // 2] == [0.2] * (TOTAL // 2)
    assert lrs[TOTAL // 2 : 3 * TOTAL // 4] == pytest.approx([0.02] * (TOTAL // 4))
    assert lrs[3 * TOTAL // 4 :] == pytest.approx([0.002] * (TOTAL // 4 + 1))


def test_cosine_schedule_falls_to_zero() -> None:
    lrs = [step[0] for step in run_schedule("cosine")]
    assert lrs[0] == 0.2
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[TOTAL // 2] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs[-2] < 0.01 * 0.2  # the last step's rate is close to 0 already


@pytest.mark.parametrize("name", ["constant", "step", "cosine"])
def test_warmup_starts_near_zero_and_reaches_lr(name: str) -> None:
    lrs = [step[0] for step in run_schedule(name, warmup=1.0)]
    assert lrs[0] == pytest.approx(0.2 * 0.01)
    assert all(a < b for a, b in itertools.pairwise(lrs[: SPE + 1]))
    assert lrs[SPE] == pytest.approx(0.2)
    if name == "step":  # the drops stay at 50% and 75% of all steps, warmup included
        assert lrs[TOTAL // 2 - 1 : TOTAL // 2 + 1] == pytest.approx([0.2, 0.02])
    if name == "cosine":
        assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_onecycle_peaks_at_each_groups_lr() -> None:
    lrs = run_schedule("onecycle", head_lr=1.0)
    peaks = [0.2, 0.2, 1.0, 1.0]  # groups decay, no_decay, head_decay, head_no_decay
    assert len(lrs[0]) == len(peaks)
    for g, peak in enumerate(peaks):
        curve = [step[g] for step in lrs]
        assert curve[0] == pytest.approx(peak / 25)
        # The peak falls between two steps (30% of 21), so the nearest step is close below it.
        assert 0.99 * peak < max(curve) <= peak
        assert 0 < curve.index(max(curve)) < TOTAL // 2
        assert curve[-1] == pytest.approx(peak / 25e4)


STATE_CASES = [(name, 0.0) for name in SCHEDULES] + [("step", 1.0), ("cosine", 1.0)]


@pytest.mark.parametrize(("name", "warmup"), STATE_CASES)
@pytest.mark.parametrize("stop", [3, 12])  # inside the warmup, and after it
def test_scheduler_resumes_exactly_from_state_dict(name: str, warmup: float, stop: int) -> None:
    def build() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        torch.manual_seed(0)
        opt = build_optimizer(Small(), "nesterov", lr=0.2, weight_decay=1e-4, head_lr=0.5)
        kwargs = {"epochs": EPOCHS, "steps_per_epoch": SPE, "warmup_epochs": warmup}
        return opt, build_scheduler(opt, name, **kwargs)

    def lrs(opt: torch.optim.Optimizer) -> list[float]:
        return [g["lr"] for g in opt.param_groups]

    opt, sched = build()
    for _ in range(stop):
        opt.step()
        sched.step()
    # Through a file as the trainer's checkpoint does it, plain data only.
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed_opt, resumed = build()
    resumed_opt.load_state_dict(state["opt"])
    resumed.load_state_dict(state["sched"])
    assert lrs(resumed_opt) == lrs(opt)
    for _ in range(stop, TOTAL):
        opt.step()
        sched.step()
        resumed_opt.step()
        resumed.step()
        assert lrs(resumed_opt) == lrs(opt)
        assert resumed.get_last_lr() == sched.get_last_lr()


# --- bad inputs ------------------------------------------------------------------------------

BAD_OPTIMIZER = [
    ({"name": "adma"}, "unknown optimizer 'adma' \\(did you mean adam"),
    ({"name": "lbfgs"}, "unknown optimizer 'lbfgs' \\(choose one of sgd"),
    ({"lr": -0.1}, "lr must be"),
    ({"lr": 0.0}, "lr must be"),
    ({"lr": math.nan}, "lr must be"),
    ({"lr": math.inf}, "lr must be"),
    ({"momentum": -0.5}, "momentum must be"),
    ({"momentum": 1.0}, "momentum must be"),
    ({"momentum": math.nan}, "momentum must be"),
    ({"weight_decay": -1e-4}, "weight_decay must be"),
    ({"weight_decay": math.nan}, "weight_decay must be"),
    ({"head_lr": -1.0}, "head_lr must be"),
    ({"name": "nesterov", "momentum": 0.0}, "needs momentum > 0"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_OPTIMIZER)
def test_bad_optimizer_arguments(kwargs: dict, message: str) -> None:
    args = {"name": "sgd", "lr": 0.1} | kwargs
    with pytest.raises(InvalidArgumentError, match=message) as info:
        build_optimizer(Small(), **args)
    assert "\n" not in str(info.value)


def test_head_lr_needs_get_classifier() -> None:
    with pytest.raises(InvalidArgumentError, match="get_classifier") as info:
        build_optimizer(nn.Linear(3, 2), "sgd", lr=0.1, head_lr=1.0)
    assert "\n" not in str(info.value)


def test_no_trainable_parameters() -> None:
    with pytest.raises(InvalidArgumentError, match="no trainable parameters"):
        build_optimizer(Small().requires_grad_(False), "sgd", lr=0.1)


BAD_SCHEDULE = [
    ({"name": "cosin"}, "unknown schedule 'cosin' \\(did you mean cosine"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"epochs": 2.5}, "epochs must be a positive integer"),
    ({"steps_per_epoch": -3}, "steps_per_epoch must be a positive integer"),
    ({"warmup_epochs": -1.0}, "warmup_epochs must be"),
    ({"warmup_epochs": math.nan}, "warmup_epochs must be"),
    ({"warmup_epochs": 4.0}, "covers the whole run"),
    ({"name": "step", "warmup_epochs": 2.0}, "before the step schedule's first drop"),
    ({"name": "onecycle", "warmup_epochs": 1.0}, "has its own warm-up"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_SCHEDULE)
def test_bad_schedule_arguments(kwargs: dict, message: str) -> None:
    opt = build_optimizer(Small(), "sgd", lr=0.1)
    args = {"name": "cosine", "epochs": EPOCHS, "steps_per_epoch": SPE} | kwargs
    with pytest.raises(InvalidArgumentError, match=message) as info:
        build_scheduler(opt, **args)
    assert "\n" not in str(info.value)
