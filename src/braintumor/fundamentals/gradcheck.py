"""Checking analytical gradients against finite differences.

For a scalar function f and a small ε, the central difference

    (f(x + ε eᵢ) - f(x - ε eᵢ)) / 2ε

approximates ∂f/∂xᵢ with error O(ε²). With ε ≈ 1e-6 in float64 it agrees with an exact
gradient to about 1e-9 relative, so a backward rule with a mistake stands out immediately.
Functions with a non-scalar output are reduced to the scalar Σ R ⊙ f(x) with a fixed random R,
which checks the whole Jacobian, not just its column sums (a scalar output is used as it is).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .autograd import Tensor


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a - b‖ / max(‖a‖, ‖b‖) (0 when both are 0)."""
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def _weights(shape, seed: int) -> np.ndarray:
    """R: fixed random weights for a non-scalar output, 1 for a scalar."""
    if int(np.prod(shape)) == 1:
        return np.ones(shape)
    return np.random.default_rng(seed).standard_normal(shape)


def numerical_gradients(f: Callable[..., Tensor], inputs: Sequence[np.ndarray], eps: float = 1e-6, seed: int = 0) -> list[np.ndarray]:
    """Central-difference gradients of ``Σ R ⊙ f(*inputs)`` (of ``f`` itself if scalar) with respect to each input."""
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    weights = None

    def scalar(values) -> float:
        nonlocal weights
        out = f(*[Tensor(v) for v in values]).data
        if weights is None:
            weights = _weights(out.shape, seed)
        return float((out * weights).sum())

    scalar(inputs)  # fixes `weights`
    grads = []
    for k, x in enumerate(inputs):
        grad = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            original = x[i]
            x[i] = original + eps
            plus = scalar(inputs)
            x[i] = original - eps
            minus = scalar(inputs)
            x[i] = original
            grad[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


def analytical_gradients(f: Callable[..., Tensor], inputs: Sequence[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Gradients of ``Σ R ⊙ f(*inputs)`` by the computation graph (same R as `numerical_gradients`)."""
    tensors = [Tensor(np.array(x, dtype=np.float64), requires_grad=True) for x in inputs]
    out = f(*tensors)
    out.backward(_weights(out.shape, seed))
    return [t.grad if t.grad is not None else np.zeros_like(t.data) for t in tensors]


def gradcheck(f: Callable[..., Tensor], inputs: Sequence[np.ndarray], eps: float = 1e-6, tol: float = 1e-6) -> tuple[bool, list[float]]:
    """Compare graph gradients of `f` with central differences.

    Parameters
    ----------
    f : callable
        Takes one `Tensor` per input, returns a `Tensor`.
    inputs : sequence of array_like
        Points at which to check (converted to float64). Keep them away from kinks
        (ReLU at 0, |x| at 0, ties in max pooling), where no derivative exists.
    eps : float
        Finite-difference step.
    tol : float
        Largest accepted relative error.

    Returns
    -------
    ok : bool
        Every input's relative error is at most `tol`.
    errors : list of float
        The relative error per input.
    """
    numeric = numerical_gradients(f, inputs, eps)
    exact = analytical_gradients(f, inputs)
    errors = [relative_error(a, n) for a, n in zip(exact, numeric)]
    return all(e <= tol for e in errors), errors
