"""`cnnzoo optimizers` and cnnzoo.visualize.optimizers: the paths are torch.optim's and equal the
NumPy update rules of cnnzoo.scratch step for step; each function's defaults show the behaviour
docs/optimizers.md says they show; the figure, the animation and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.scratch import optim
from cnnzoo.visualize.optimizers import (
    FUNCTIONS,
    OPTIMIZERS,
    SURFACES,
    optimizer_paths,
    steps_to_reach,
)
from cnnzoo.visualize.optimizers.draw import draw_paths


@pytest.fixture(scope="module")
def defaults():
    """Every function's paths at its defaults, computed once."""
    return {name: optimizer_paths(name) for name in FUNCTIONS}


def _lengths(path: np.ndarray) -> np.ndarray:
    steps = np.diff(path, axis=0)
    return np.hypot(steps[:, 0], steps[:, 1])


def _distance(path: np.ndarray, point: tuple[float, float]) -> float:
    return float(np.hypot(*(path[-1] - np.array(point))))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_paths_are_torch_optims_and_equal_the_numpy_rules_step_for_step(function, defaults):
    paths = defaults[function]
    surface = paths.surface
    for name in OPTIMIZERS:
        rule = optim.OPTIMIZERS[name](paths.lrs[name])
        w = np.array(surface.start)
        ours = [w.copy()]
        for _ in range(60):
            # The gradient at the NumPy rule's own point (autograd, float64): the two paths
            # agree only if every update does.
            point = torch.tensor(w, requires_grad=True)
            surface.f(point[0], point[1]).backward()
            assert point.grad is not None
            rule.step({"w": w}, {"w": point.grad.numpy()})
            ours.append(w.copy())
        torch_path = paths.points[name][:61]
        scale = np.abs(torch_path).max()
        assert np.abs(np.array(ours) - torch_path).max() <= 1e-10 * scale, (function, name)
        assert paths.points[name].shape == (paths.steps + 1, 2) and not paths.diverged[name]


def test_ill_conditioned_sgd_zigzags_momentum_arrives_sooner_nesterov_overshoots_less(defaults):
    paths = defaults["ill-conditioned"]
    sgd = paths.points["sgd"]
    # SGD zig-zags: the steep coordinate's step changes sign at every step while it matters.
    dy = np.diff(sgd[:, 1])[:12]
    assert np.all(np.sign(dy[1:]) == -np.sign(dy[:-1])), dy
    assert np.all(np.diff(sgd[:, 0]) > 0)  # ... while creeping along x without turning back
    # Momentum reaches the minimum (within 0.05, for good) in fewer than half SGD's steps.
    longer = optimizer_paths("ill-conditioned", steps=600, optimizers=["sgd", "momentum"])
    reach = {n: steps_to_reach(longer.points[n], (0.0, 0.0), 0.05) for n in longer.points}
    assert reach["sgd"] is not None and reach["momentum"] is not None
    assert 2 * reach["momentum"] < reach["sgd"], reach
    assert reach["momentum"] <= paths.steps < reach["sgd"]  # the figure shows both
    # Momentum overshoots the minimum along x; Nesterov, at the same rate, less (in x and y).
    mom, nag = paths.points["momentum"], paths.points["nesterov"]
    assert mom[:, 0].max() > 0.2 and 0 < nag[:, 0].max() < mom[:, 0].max()
    assert np.abs(nag[1:, 1]).max() < np.abs(mom[1:, 1]).max()
    assert paths.lrs["momentum"] == paths.lrs["nesterov"]
    # AdaGrad's steps only shrink.
    assert np.all(np.diff(_lengths(paths.points["adagrad"])) <= 0)
    # RMSprop and Adam scale each coordinate by its own gradients: their first step is as long
    # in x as in y (Adam's is lr in each), where SGD's is 40 times longer in y.
    for name in ("rmsprop", "adam"):
        first = np.abs(paths.points[name][1] - paths.points[name][0])
        assert first[0] == pytest.approx(first[1], rel=1e-6), name
    assert np.abs(paths.points["adam"][1] - paths.points["adam"][0]) == pytest.approx(
        [paths.lrs["adam"]] * 2, rel=1e-6
    )
    first_sgd = np.abs(sgd[1] - sgd[0])
    assert first_sgd[1] / first_sgd[0] == pytest.approx(40)


def test_rosenbrock_sgd_crawls_where_momentum_and_adam_arrive(defaults):
    paths = defaults["rosenbrock"]
    minimum = paths.surface.minima[0]
    for name in ("momentum", "nesterov", "adam"):
        assert _distance(paths.points[name], minimum) < 0.15, name
    assert _distance(paths.points["sgd"], minimum) > 0.5
    assert paths.lrs["sgd"] == 2 * paths.lrs["momentum"]  # at twice momentum's rate
    # AdaGrad stalls: its last 100 steps are over 10 times shorter than its first 10.
    lengths = _lengths(paths.points["adagrad"])
    assert lengths[-100:].mean() < lengths[:10].mean() / 10
    assert _distance(paths.points["adagrad"], minimum) > 0.5


def test_beale_sgd_falls_short_at_near_its_largest_rate(defaults):
    paths = defaults["beale"]
    minimum = paths.surface.minima[0]
    assert _distance(paths.points["sgd"], minimum) > 0.05
    for name in ("momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        assert _distance(paths.points[name], minimum) < 0.05, name
    faster = optimizer_paths("beale", lrs={"sgd": 2.5 * paths.lrs["sgd"]}, optimizers=["sgd"])
    assert faster.diverged["sgd"] and len(faster.points["sgd"]) < faster.steps + 1


def test_saddle_sgd_lingers_the_adaptive_methods_escape(defaults):
    paths = defaults["saddle"]

    def escape(name: str) -> int:
        return int(np.argmax(np.abs(paths.points[name][:, 1]) > 0.5))

    assert escape("sgd") > 50
    for name in ("adagrad", "rmsprop", "adam"):
        assert 0 < 4 * escape(name) < escape("sgd"), name
    near = np.hypot(*paths.points["sgd"].T) < 0.2
    assert near.sum() >= 20  # SGD spends 20+ steps within 0.2 of the saddle point
    for name in OPTIMIZERS:  # ... and every method ends in one of the two minima
        assert min(_distance(paths.points[name], m) for m in paths.surface.minima) < 0.05


def test_the_figure_and_the_animation(tmp_path, capsys):
    out = tmp_path / "paths.png"
    argv = ["optimizers", "--function", "ill-conditioned", "--steps", "3", "--out", str(out)]
    assert main([*argv, "--lr", "sgd=0.5,adam=0.2", "--gif"]) == 0
    printed = capsys.readouterr().out
    assert "SGD" in printed and "figure:" in printed and "animation:" in printed
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 400
    with Image.open(out.with_suffix(".gif")) as gif:
        assert (
            gif.format == "GIF" and gif.n_frames == 3 + 1
        )  # the start and one frame per step (< 40)


def test_a_diverging_path_is_cut_and_named(tmp_path):
    # SGD's y is multiplied by 1 − 2·1.5 = −2 at every step: past 1e6 after about 20 steps.
    paths = optimizer_paths(
        "ill-conditioned", steps=50, lrs={"sgd": 1.5}, optimizers=["sgd", "adam"]
    )
    assert paths.diverged["sgd"] and np.isfinite(paths.points["sgd"]).all()
    assert 15 < len(paths.points["sgd"]) < 25 and np.abs(paths.points["sgd"]).max() <= 1e6
    assert not paths.diverged["adam"] and len(paths.points["adam"]) == 51
    draw_paths(paths, tmp_path / "d.png")  # the legend says "diverged at step k"
    assert (tmp_path / "d.png").stat().st_size > 0


def test_every_function_has_a_default_for_every_optimizer_and_a_behaviour():
    for surface in SURFACES.values():
        assert set(surface.lrs) == set(OPTIMIZERS) and surface.shows
        for minimum in surface.minima:  # the marked minima are stationary points
            point = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
            surface.f(point[0], point[1]).backward()
            assert point.grad is not None and point.grad.abs().max() < 1e-12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--function", "rosenbrok"], "--function: unknown function 'rosenbrok' (did you mean "
         "rosenbrock?)."),
        (["--function", "beale", "--steps", "0"], "--steps must be a positive integer, got 0."),
        (["--function", "beale", "--lr", "sgd"], "--lr 'sgd': 'sgd' is not optimizer=rate; "
         "write e.g. sgd=0.01,adam=0.1."),
        (["--function", "beale", "--lr", "sgd=fast"], "--lr 'sgd=fast': 'sgd=fast' is not "
         "optimizer=rate; write e.g. sgd=0.01,adam=0.1."),
        (["--function", "beale", "--lr", "adma=0.1"], "--lr: unknown optimizer 'adma' (did you "
         "mean adam, adagrad?)."),
        (["--function", "beale", "--lr", "sgd=-0.1"], "--lr sgd must be a number > 0, got -0.1."),
        (["--function", "beale", "--lr", "sgd=0.1,sgd=0.2"], "--lr 'sgd=0.1,sgd=0.2' gives sgd "
         "twice; give it once."),
        (["--function", "beale", "--lr", "sgd=inf"], "--lr 'sgd=inf': 'sgd=inf' is not "
         "optimizer=rate; write e.g. sgd=0.01,adam=0.1."),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(args, message, capsys, tmp_path):
    assert main(["optimizers", *args, "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.strip() == f"cnnzoo optimizers: error: {message}"
    assert not (tmp_path / "p.png").exists()


def test_bad_out_is_one_line(capsys, tmp_path):
    assert main(["optimizers", "--function", "beale", "--out", str(tmp_path / "p.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err
    assert main(["optimizers", "--function", "beale", "--out", str(tmp_path / "no/p.png")]) == 2
    assert "does not exist; create it first." in capsys.readouterr().err


def test_library_errors():
    with pytest.raises(InvalidArgumentError, match=r"unknown function 'sadle' \(did you mean"):
        optimizer_paths("sadle")
    with pytest.raises(InvalidArgumentError, match="steps must be a positive integer"):
        optimizer_paths("saddle", steps=0)
    with pytest.raises(InvalidArgumentError, match="lrs adam must be a number > 0"):
        optimizer_paths("saddle", lrs={"adam": 0})
    with pytest.raises(InvalidArgumentError, match=r"optimizers: unknown optimizer 'nag' \("):
        optimizer_paths("saddle", optimizers=["sgd", "nag"])
