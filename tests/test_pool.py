"""Min and stochastic pooling against hand calculations (Zeiler & Fergus 2013)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import MinPool2d, StochasticPool2d, make_pool

WINDOW = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # one 2×2 window: p = (0.1, 0.2, 0.3, 0.4)


@settings(max_examples=30, deadline=None)
@given(
    side=st.integers(3, 9),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_min_pool_is_negated_max_pool_of_negation(side, kernel, stride, seed):
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(seed))
    expected = -F.max_pool2d(-x, kernel, stride)
    assert torch.equal(MinPool2d(kernel, stride)(x), expected)


def test_min_pool_picks_the_smallest_value():
    assert MinPool2d(2)(WINDOW).item() == 1.0


def test_stochastic_pool_eval_is_probability_weighted_average():
    pool = StochasticPool2d(2).eval()
    # Σ p_i a_i = (1² + 2² + 3² + 4²) / (1 + 2 + 3 + 4) = 30 / 10
    assert pool(WINDOW).item() == pytest.approx(3.0)


def test_stochastic_pool_eval_on_overlapping_windows_by_hand():
    x = torch.tensor([[[[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]]])
    out = StochasticPool2d(2, stride=1).eval()(x)
    # windows: (0,1,0,0) → 1; (1,2,0,3) → 14/6; (0,0,4,0) → 4; (0,3,0,0) → 3
    expected = torch.tensor([[[[1.0, 14 / 6], [4.0, 3.0]]]])
    assert torch.allclose(out, expected)


def test_stochastic_pool_training_outputs_are_window_values():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    out = StochasticPool2d(2).train()(x)
    windows = x.reshape(4, 3, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(4, 3, 4, 4, 4)
    assert out.shape == (4, 3, 4, 4)
    assert (windows == out.unsqueeze(-1)).any(-1).all()


def test_stochastic_pool_choice_frequencies_match_probabilities():
    torch.manual_seed(1234)
    draws = 20_000
    x = WINDOW.expand(draws, 1, 2, 2).contiguous()
    out = StochasticPool2d(2).train()(x).flatten()
    observed = torch.stack([(out == v).sum() for v in (1.0, 2.0, 3.0, 4.0)]).double()
    assert observed.sum() == draws
    expected = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.double) * draws
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    # χ² with 3 degrees of freedom: P(χ² > 16.27) = 0.001.
    assert chi2 < 16.27


def test_stochastic_pool_gradient_reaches_the_chosen_element_only():
    torch.manual_seed(3)
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    out = StochasticPool2d(2).train()(x)
    out.sum().backward()
    grad = x.grad.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)  # windows as rows
    values = x.detach().reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)
    assert torch.equal((grad != 0).sum(1), torch.ones(4, dtype=torch.long))
    assert torch.equal(values[grad == 1], out.detach().flatten())


def test_stochastic_pool_all_zero_window_gives_zero_in_both_modes():
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, :, 2:] = 5.0  # second window all fives, first window all zeros
    for mode in (True, False):
        out = StochasticPool2d(2).train(mode)(x)
        assert out.flatten().tolist() == [0.0, 5.0]


def test_stochastic_pool_rejects_negative_input_with_a_clear_error():
    with pytest.raises(InvalidArgumentError, match=r"non-negative.*ReLU"):
        StochasticPool2d(2)(-WINDOW)


def test_make_pool_names_and_rejects_unknown_kind():
    assert isinstance(make_pool("min", 2), MinPool2d)
    assert isinstance(make_pool("stochastic", 2), StochasticPool2d)
    with pytest.raises(InvalidArgumentError, match="unknown pool 'median'"):
        make_pool("median", 2)
