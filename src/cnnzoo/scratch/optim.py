"""The update rules of SGD, momentum, Nesterov, AdaGrad, RMSprop and Adam in NumPy, written as
torch.optim computes them (torch's documented algorithms, default options), so that the same
gradients give the same parameters step for step (tests/test_scratch.py, float64).

Notation: parameter w, gradient g_t at step t = 1, 2, …, learning rate η, L2 weight decay λ
(``g_t ← g_t + λ w_{t−1}`` first, in every rule, as torch does). docs/optimizers.md says where
torch's forms differ from the textbooks' and why they are the same methods.

Each optimizer keeps its state per parameter name: ``step(params, grads)`` updates the arrays of
``params`` in place from the arrays of ``grads`` with the same keys.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Arrays = dict[str, np.ndarray]


class Optimizer:
    """A learning rate, an optional L2 weight decay and per-parameter state."""

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.t = 0  # steps taken

    def step(self, params: Arrays, grads: Arrays) -> None:
        """One update of every parameter that has a gradient."""
        self.t += 1
        for name, g in grads.items():
            w = params[name]
            if self.weight_decay:
                g = g + self.weight_decay * w
            self._update(w, g, self.state.setdefault(name, {}))

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Gradient descent, with heavy-ball momentum μ or Nesterov momentum (torch's SGD,
    dampening 0):

    - plain (μ = 0): ``w_t = w_{t−1} − η g_t``;
    - momentum: ``b_1 = g_1``, ``b_t = μ b_{t−1} + g_t``, ``w_t = w_{t−1} − η b_t``
      (Polyak's ``v_t = μ v_{t−1} − η g_t`` with ``v = −η b`` at a constant η);
    - Nesterov: ``b_t`` as above, ``w_t = w_{t−1} − η (g_t + μ b_t)`` (Sutskever et al.'s
      look-ahead, rewritten so that the gradient is taken at the stored point).
    """

    def __init__(
        self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = momentum
        self.nesterov = nesterov

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        if self.momentum:
            if "b" not in state:
                state["b"] = g.copy()  # b_1 = g_1: torch starts the buffer at the gradient
            else:
                state["b"] = self.momentum * state["b"] + g
            g = g + self.momentum * state["b"] if self.nesterov else state["b"]
        w -= self.lr * g


def Momentum(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SGD:
    """Heavy-ball momentum: :class:`SGD` with ``momentum`` (torch ``SGD(momentum=0.9)``)."""
    return SGD(lr, momentum=momentum, weight_decay=weight_decay)


def Nesterov(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SGD:
    """Nesterov momentum: :class:`SGD` with ``nesterov=True`` (torch
    ``SGD(momentum=0.9, nesterov=True)``)."""
    return SGD(lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011), torch's ``Adagrad`` (no learning-rate decay, accumulator
    starting at 0): ``s_t = s_{t−1} + g_t²``, ``w_t = w_{t−1} − η g_t / (√s_t + ε)``,
    ε = 1e-10. The effective step ``η / √s_t`` only shrinks: s_t never decreases."""

    def __init__(self, lr: float, eps: float = 1e-10, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.eps = eps

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        state["s"] = state.get("s", np.zeros_like(w)) + g * g
        w -= self.lr * g / (np.sqrt(state["s"]) + self.eps)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), torch's ``RMSprop`` (not centred, no momentum):
    ``v_t = α v_{t−1} + (1 − α) g_t²`` (v_0 = 0), ``w_t = w_{t−1} − η g_t / (√v_t + ε)``,
    α = 0.99, ε = 1e-8 added *outside* the square root (TensorFlow adds it inside)."""

    def __init__(
        self, lr: float, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        self.alpha = alpha
        self.eps = eps

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        v = state.get("v", np.zeros_like(w))
        state["v"] = self.alpha * v + (1 - self.alpha) * g * g
        w -= self.lr * g / (np.sqrt(state["v"]) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), torch's ``Adam`` (no AMSGrad):
    ``m_t = β₁ m_{t−1} + (1 − β₁) g_t``, ``v_t = β₂ v_{t−1} + (1 − β₂) g_t²`` (m_0 = v_0 = 0),
    bias corrections ``m̂ = m_t / (1 − β₁ᵗ)``, ``v̂ = v_t / (1 − β₂ᵗ)``,
    ``w_t = w_{t−1} − η m̂ / (√v̂ + ε)``; β₁ = 0.9, β₂ = 0.999, ε = 1e-8 (added after the
    square root of the corrected v̂, as torch does)."""

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.betas = betas
        self.eps = eps

    def _update(self, w: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        beta1, beta2 = self.betas
        m = state.get("m", np.zeros_like(w))
        v = state.get("v", np.zeros_like(w))
        state["m"] = m = beta1 * m + (1 - beta1) * g
        state["v"] = v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**self.t)
        v_hat = v / (1 - beta2**self.t)
        w -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# The names the trainer uses (cnnzoo.training.OPTIMIZERS), adamw left out.
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, lr: float) -> Optimizer:
    """One of :data:`OPTIMIZERS` by name with the defaults above (momentum 0.9)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr)
