"""Gradient descent: optimizers, how a dataset is cut into batches, and early stopping.

*Batch* gradient descent uses the whole training set for every step (exact gradient, one step
per epoch), *stochastic* gradient descent one sample per step (many cheap, noisy steps), and
*mini-batch* gradient descent a few dozen samples (the compromise every deep learning library
uses). `batches` yields the index sets for all three.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .autograd import Tensor


class Optimizer:
    """Holds the parameters it updates; `zero_grad` clears their gradients."""

    def __init__(self, params: list[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters to update")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """w ← w - lr·v with velocity v ← momentum·v + ∇w (plain gradient descent when momentum = 0).

    Momentum averages recent gradients, damping the zig-zag across a narrow valley and speeding
    travel along it.
    """

    def __init__(self, params: list[Tensor], lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity = [np.zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        for p, v in zip(self.params, self.velocity):
            if p.grad is None:
                continue
            v *= self.momentum
            v += p.grad
            p.data -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): a step of lr·m̂ / (√v̂ + ε), with m and v running means of the
    gradient and of its square, corrected for their start at zero (m̂ = m / (1 - β₁ᵗ), ...).
    Each weight gets its own step size, large where gradients are consistently small.
    """

    def __init__(self, params: list[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        self.t += 1
        correct1 = 1.0 - self.beta1**self.t
        correct2 = 1.0 - self.beta2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m *= self.beta1
            m += (1.0 - self.beta1) * p.grad
            v *= self.beta2
            v += (1.0 - self.beta2) * p.grad * p.grad
            p.data -= (self.lr / correct1) * m / (np.sqrt(v / correct2) + self.eps)


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering ``0..n-1`` once (one epoch), shuffled when `rng` is given.

    ``batch_size = n`` is batch gradient descent, ``1`` stochastic, anything between mini-batch.
    The last batch may be smaller.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


class EarlyStopping:
    """Stop when a validation metric has not improved for `patience` epochs; keep the best weights.

    Parameters
    ----------
    patience : int
        Epochs without improvement tolerated before stopping.
    mode : {"min", "max"}
        Whether lower (a loss) or higher (an accuracy) is better.
    min_delta : float
        Smallest change that counts as an improvement.

    Example
    -------
    >>> stopper = EarlyStopping(patience=5, mode="min")       # doctest: +SKIP
    >>> for epoch in range(100):                              # doctest: +SKIP
    ...     train_one_epoch(); val = validate()
    ...     if stopper.step(val, model.parameters()):
    ...         break
    >>> stopper.restore(model.parameters())                   # doctest: +SKIP
    """

    def __init__(self, patience: int = 5, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = -1
        self.epoch = -1
        self.best_params: list[np.ndarray] | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float, params: list[Tensor]) -> bool:
        """Record this epoch's metric; return True when training should stop."""
        self.epoch += 1
        if self._improved(value):
            self.best, self.best_epoch = float(value), self.epoch
            self.best_params = [p.data.copy() for p in params]
        return self.epoch - self.best_epoch >= self.patience

    def restore(self, params: list[Tensor]) -> None:
        """Copy the best epoch's weights back into `params`."""
        if self.best_params is None:
            raise RuntimeError("restore() before any step(): no weights recorded")
        for p, best in zip(params, self.best_params):
            p.data[...] = best
