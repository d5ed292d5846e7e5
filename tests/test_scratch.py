"""cnnzoo.scratch, the NumPy reference, against torch in float64: every forward and gradient of
the layers against autograd, the update rules against torch.optim, the NumPy LeNet-5 against
cnnzoo's ``lenet5`` (logits and every parameter's gradient), and a short training run."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from cnnzoo.cli import main
from cnnzoo.layers import MinPool2d, StochasticPool2d
from cnnzoo.models import build_model
from cnnzoo.models.lenet import C3_TABLE, ScaledTanh
from cnnzoo.scratch import layers as L
from cnnzoo.scratch import optim
from cnnzoo.scratch.lenet import LeNet5, init_params
from cnnzoo.scratch.train import train_lenet5

RTOL = 1e-10


def close(ours: np.ndarray | float | None, ref: torch.Tensor) -> bool:
    """|ours − ref| ≤ 1e-10 · max |ref| (elementwise max): relative to the array's scale, so
    that an entry near 0 is not held to a tolerance below float64's rounding of the others."""
    assert ours is not None
    expected = ref.detach().numpy()
    scale = max(np.abs(expected).max(), np.finfo(np.float64).tiny)
    return bool(np.abs(np.asarray(ours) - expected).max() <= RTOL * scale)


def leaf(*shape: int, gen: torch.Generator, positive: bool = False) -> torch.Tensor:
    t = torch.rand(*shape, generator=gen, dtype=torch.float64)
    return (t if positive else 2 * t - 1).requires_grad_()


# --- layers ----------------------------------------------------------------------------------

conv_cases = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "c": st.integers(1, 3),
        "k": st.integers(1, 3),
        "size": st.tuples(st.integers(3, 8), st.integers(3, 8)),
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 3),
        "padding": st.integers(0, 2),
        "dilation": st.integers(1, 2),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=25, deadline=None)
@given(conv_cases)
def test_conv2d_and_its_gradients_equal_torch(case):
    h, w = case["size"]
    span = case["dilation"] * (case["kernel"] - 1) + 1
    assume(span <= min(h, w) + 2 * case["padding"])  # else no output: torch refuses it too
    gen = torch.Generator().manual_seed(case["seed"])
    x = leaf(case["n"], case["c"], h, w, gen=gen)
    weight = leaf(case["k"], case["c"], case["kernel"], case["kernel"], gen=gen)
    bias = leaf(case["k"], gen=gen) if case["bias"] else None
    opts = {key: case[key] for key in ("stride", "padding", "dilation")}
    y = F.conv2d(x, weight, bias, **opts)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    ours, cache = L.conv2d_forward(
        x.detach().numpy(), weight.detach().numpy(),
        None if bias is None else bias.detach().numpy(), **opts,
    )  # fmt: skip
    assert ours.shape == tuple(y.shape) and close(ours, y)
    dx, dw, db = L.conv2d_backward(dy.numpy(), cache)
    assert close(dx, x.grad) and close(dw, weight.grad)
    assert (db is None) if bias is None else close(db, bias.grad)
    assert ours.shape[2] == L.output_size(h, case["kernel"], **opts)


pool_cases = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["max", "avg", "min", "stochastic"]),
        "n": st.integers(1, 2),
        "c": st.integers(1, 3),
        "size": st.tuples(st.integers(2, 7), st.integers(2, 7)),
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 3),
        "padding": st.integers(0, 1),
        "seed": st.integers(0, 2**16),
    }
)


def _torch_pool(kind: str, kernel: int, stride: int, padding: int) -> torch.nn.Module:
    if kind == "max":
        return torch.nn.MaxPool2d(kernel, stride, padding)
    if kind == "avg":
        return torch.nn.AvgPool2d(kernel, stride, padding)
    if kind == "min":
        return MinPool2d(kernel, stride, padding)
    return StochasticPool2d(kernel, stride, padding).eval()


@settings(max_examples=30, deadline=None)
@given(pool_cases)
def test_pooling_and_its_gradient_equal_torch_in_eval(case):
    kind, k, s = case["kind"], case["kernel"], case["stride"]
    p = min(case["padding"], k // 2)  # torch refuses padding above half the kernel
    h, w = case["size"]
    assume(k <= min(h, w) + 2 * p)
    gen = torch.Generator().manual_seed(case["seed"])
    x = leaf(case["n"], case["c"], h, w, gen=gen, positive=kind == "stochastic")
    y = _torch_pool(kind, k, s, p)(x)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    ours, cache = L.pool2d_forward(x.detach().numpy(), kind, k, s, p)
    assert ours.shape == tuple(y.shape) and close(ours, y)
    assert close(L.pool2d_backward(dy.numpy(), cache), x.grad)


def test_stochastic_pooling_in_training_samples_in_proportion_and_routes_the_gradient():
    # 40,000 copies of one window (1, 2, 3, 4): each value is drawn with probability a_i / 10.
    window = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = np.tile(window, (1, 1, 200, 200))  # (1, 1, 400, 400): 40,000 windows of 2×2
    rng = np.random.default_rng(0)
    y, cache = L.pool2d_forward(x, "stochastic", 2, training=True, rng=rng)
    freq = [(y == v).mean() for v in (1.0, 2.0, 3.0, 4.0)]
    assert np.allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.01), freq
    # The gradient reaches the drawn element only: torch's gather with the same indices.
    xt = torch.tensor(x, requires_grad=True)
    windows = F.unfold(xt, 2, stride=2).transpose(1, 2)  # (1, L, 4)
    index = torch.from_numpy(cache["index"].reshape(1, -1, 1))
    picked = windows.gather(-1, index).reshape(y.shape)
    assert close(y, picked)
    dy = torch.randn(y.shape, dtype=torch.float64)
    picked.backward(dy)
    assert close(L.pool2d_backward(dy.numpy(), cache), xt.grad)
    zeros, _ = L.pool2d_forward(np.zeros((1, 1, 2, 2)), "stochastic", 2, training=True, rng=rng)
    assert zeros.item() == 0.0


@pytest.mark.parametrize("kind", L.ACTIVATIONS)
def test_activations_equal_torch(kind):
    gen = torch.Generator().manual_seed(0)
    x = leaf(3, 4, 5, gen=gen)
    ref = {"relu": torch.relu, "tanh": torch.tanh, "scaled_tanh": ScaledTanh()}[kind]
    y = ref(3 * x)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    ours, cache = L.activation_forward(3 * x.detach().numpy(), kind)
    assert close(ours, y)
    assert close(3 * L.activation_backward(dy.numpy(), cache), x.grad)


def test_linear_flatten_and_cross_entropy_equal_torch():
    gen = torch.Generator().manual_seed(1)
    x = leaf(5, 2, 3, 4, gen=gen)
    weight, bias = leaf(7, 24, gen=gen), leaf(7, gen=gen)
    labels = torch.tensor([0, 6, 3, 3, 1])
    logits = F.linear(torch.flatten(x, 1), weight, bias)
    loss = F.cross_entropy(10 * logits, labels)  # × 10: a peaked softmax too
    loss.backward()
    flat, fcache = L.flatten_forward(x.detach().numpy())
    ours, lcache = L.linear_forward(flat, weight.detach().numpy(), bias.detach().numpy())
    assert close(ours, logits)
    our_loss, dlogits = L.softmax_cross_entropy(10 * ours, labels.numpy())
    assert abs(our_loss - loss.item()) <= RTOL * loss.item()
    dflat, dw, db = L.linear_backward(10 * dlogits, lcache)
    assert close(dw, weight.grad) and close(db, bias.grad)
    assert close(L.flatten_backward(dflat, fcache), x.grad)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5)], ids=["1d", "2d"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_equals_torch_with_its_running_statistics(shape, training):
    gen = torch.Generator().manual_seed(2)
    bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3, generator=gen, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.rand(3, generator=gen, dtype=torch.float64) - 0.5)
        bn.running_mean.copy_(torch.rand(3, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(3, generator=gen, dtype=torch.float64) + 0.5)
    running_mean, running_var = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    bn.train(training)
    x = (3 * torch.rand(shape, generator=gen, dtype=torch.float64) + 1).requires_grad_()
    y = bn(x)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    ours, cache = L.batchnorm_forward(
        x.detach().numpy(), bn.weight.detach().numpy(), bn.bias.detach().numpy(),
        running_mean, running_var, training=training,
    )  # fmt: skip
    assert close(ours, y)
    assert close(running_mean, bn.running_mean) and close(running_var, bn.running_var)
    dx, dgamma, dbeta = L.batchnorm_backward(dy.numpy(), cache)
    assert close(dx, x.grad) and close(dgamma, bn.weight.grad) and close(dbeta, bn.bias.grad)


# --- optimizers ------------------------------------------------------------------------------

TORCH_OPTIMIZERS = {
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd),
    "momentum": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
    "nesterov": lambda p, lr, wd: torch.optim.SGD(
        p, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
    ),
    "adagrad": lambda p, lr, wd: torch.optim.Adagrad(p, lr=lr, weight_decay=wd),
    "rmsprop": lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr, weight_decay=wd),
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
}


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_update_rules_equal_torch_optim_step_for_step(name, weight_decay):
    gen = torch.Generator().manual_seed(3)
    shapes = {"w": (4, 3), "b": (4,)}
    torch_params = {
        k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()
    }
    ours = {k: v.numpy().copy() for k, v in torch_params.items()}
    for v in torch_params.values():
        v.requires_grad_()
    reference = TORCH_OPTIMIZERS[name](list(torch_params.values()), 0.01, weight_decay)
    rule = optim.OPTIMIZERS[name](0.01, weight_decay=weight_decay)
    for _ in range(25):
        # Gradients of a loss that depends on the parameters (a quartic), so that the state's
        # history matters; both sides get the gradient at their own current point.
        grads = {k: 4 * v**3 - v for k, v in ours.items()}
        for v in torch_params.values():
            v.grad = torch.from_numpy(4 * v.detach().numpy() ** 3 - v.detach().numpy())
        reference.step()
        rule.step(ours, grads)
        for k, v in torch_params.items():
            assert close(ours[k], v), (name, k)
    assert optim.make_optimizer(name, 0.1).lr == 0.1


# --- LeNet-5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("act", "pool", "table"),
    [
        ("tanh", "avg", False),  # cnnzoo's lenet5
        ("tanh", "avg", True),  # the paper's C3 connections
        ("scaled_tanh", "avg", True),  # the paper's squashing
        ("relu", "max", False),
        ("relu", "min", True),
        ("relu", "stochastic", False),  # eval: the probability-weighted average
    ],
)
def test_numpy_lenet5_computes_lenet5s_logits_and_gradients(act, pool, table):
    torch.manual_seed(4)
    model = build_model("lenet5", num_classes=10, in_chans=1, act=act, pool=pool, c3_table=table)
    model = model.double().eval()
    if table:  # random values in the unconnected weights too: the mask must ignore them
        with torch.no_grad():
            model.c3.weight.normal_()
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    net = LeNet5(params, act=act, pool=pool, c3_table=C3_TABLE if table else None)
    x = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    labels = torch.tensor([3, 1, 4, 1])
    logits = model(x)
    F.cross_entropy(logits, labels).backward()
    loss, grads = net.loss_and_grads(x.numpy(), labels.numpy())
    assert close(net.forward(x.numpy()), logits)
    assert abs(loss - F.cross_entropy(logits, labels).item()) <= RTOL * loss
    assert set(grads) == set(params)
    for name, param in model.named_parameters():
        assert close(grads[name], param.grad), name


@pytest.fixture(scope="module")
def digits_arrays():
    from cnnzoo.scratch.cli import digits_arrays

    arrays = digits_arrays()
    assert [a.shape for a in arrays] == [(1437, 1, 32, 32), (1437,), (360, 1, 32, 32), (360,)]
    return arrays


def test_a_short_training_run_learns(digits_arrays):
    # 20 steps of 32 images, under half an epoch (about 80% here): the loss falls and the
    # accuracy is far above chance (10%). The full run (≥ 97%) is measured in docs/scratch.md.
    train_x, train_y = digits_arrays[0][:256], digits_arrays[1][:256]
    fresh = LeNet5(init_params(np.random.default_rng(0), dtype=np.float32))
    with threadpool_limits(1, user_api="blas"):  # as scratch-train runs it: faster
        result = train_lenet5(
            *digits_arrays,
            epochs=1,
            lr=2e-3,
            batch_size=32,
            seed=0,
            max_steps=20,
            schedule="constant",
        )
    assert (fresh.params["c1.weight"] == result.model.params["c1.weight"]).sum() == 0
    (row,) = result.epochs
    assert row.val_accuracy >= 0.6, row
    before, _ = L.softmax_cross_entropy(fresh.forward(train_x), train_y)
    after, _ = L.softmax_cross_entropy(result.model.forward(train_x), train_y)
    assert 2.0 < before < 2.6 and after < 0.7 * before, (before, after)


def test_scratch_train_command_runs(capsys):
    assert main(["scratch-train", "--epochs", "1", "--max-steps", "5", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: train loss" in out and "final val accuracy" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0."),
        (["--lr", "-1"], "--lr must be a number > 0, got -1.0."),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0."),
        (["--seed", "-1"], "--seed must be a whole number ≥ 0, got -1."),
        (["--optimizer", "adma"], "--optimizer 'adma' is not one of"),
        (["--max-steps", "0"], "--max-steps must be a positive integer, got 0."),
        (["--schedule", "cosin"], "--schedule 'cosin' is not one of cosine, constant (did you"),
        (["--threads", "0"], "--threads must be a positive integer, got 0."),
    ],
)
def test_scratch_train_bad_options_are_one_line(args, message, capsys):
    assert main(["scratch-train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cnnzoo scratch-train: error: {message}") and "\n" not in err


def test_the_mechanism_imports_numpy_and_nothing_else_of_cnnzoo():
    folder = Path(L.__file__).parent
    for module in ("layers", "optim", "lenet", "train"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        ours = {n for n in names if n.startswith("cnnzoo")}
        assert all(n.startswith("cnnzoo.scratch") for n in ours), (module, ours)
        assert "torch" not in names, module
