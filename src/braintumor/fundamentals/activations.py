"""Activation functions and softmax, each with its derivative written out.

| function | f(x)                       | f'(x)                         |
|----------|----------------------------|-------------------------------|
| sigmoid  | 1 / (1 + e^-x)             | f(x) (1 - f(x)), at most 1/4  |
| tanh     | (e^x - e^-x) / (e^x + e^-x) | 1 - f(x)²                     |
| ReLU     | max(0, x)                  | 1 if x > 0 else 0             |
| GELU     | x Φ(x), Φ the normal CDF   | Φ(x) + x φ(x)                 |

Φ(x) = (1 + erf(x / √2)) / 2 is the exact ("erf") form of GELU, not the tanh approximation.
"""

from __future__ import annotations

import math

import numpy as np

from .autograd import Tensor, as_tensor, make

_erf = np.vectorize(math.erf, otypes=[np.float64])
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def sigmoid(x) -> Tensor:
    """Logistic function 1 / (1 + e^-x), computed without overflow for large |x|."""
    x = as_tensor(x)
    z = np.exp(-np.abs(x.data))  # in (0, 1]: never overflows
    out = np.where(x.data >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype)
    return make(out, (x,), lambda g: (g * out * (1.0 - out),), "sigmoid")


def tanh(x) -> Tensor:
    """Hyperbolic tangent."""
    x = as_tensor(x)
    out = np.tanh(x.data)
    return make(out, (x,), lambda g: (g * (1.0 - out * out),), "tanh")


def relu(x) -> Tensor:
    """max(0, x); the derivative at 0 is taken as 0, as PyTorch does."""
    x = as_tensor(x)
    positive = x.data > 0
    return make(x.data * positive, (x,), lambda g: (g * positive,), "relu")


def gelu(x) -> Tensor:
    """Gaussian error linear unit x Φ(x), erf form."""
    x = as_tensor(x)
    cdf = (0.5 * (1.0 + _erf(x.data / _SQRT2))).astype(x.dtype)
    pdf = (_INV_SQRT_2PI * np.exp(-0.5 * x.data * x.data)).astype(x.dtype)
    return make(x.data * cdf, (x,), lambda g: (g * (cdf + x.data * pdf),), "gelu")


def softmax(x, axis: int = -1) -> Tensor:
    """e^x / Σ e^x along `axis`; the maximum is subtracted first so e^x cannot overflow.

    The Jacobian of softmax s is diag(s) - s sᵀ, so the backward rule is s ⊙ (g - ⟨g, s⟩).
    """
    x = as_tensor(x)
    e = np.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return make(out, (x,), lambda g: (out * (g - (g * out).sum(axis=axis, keepdims=True)),), "softmax")


def log_softmax(x, axis: int = -1) -> Tensor:
    """log softmax(x) = x - logsumexp(x), with the log-sum-exp trick for stability.

    logsumexp(x) = m + log Σ e^(x - m) with m = max x: every exponent is ≤ 0, so nothing
    overflows, and the largest term is e⁰ = 1, so the log never sees 0.
    """
    x = as_tensor(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    probs = np.exp(out)
    return make(out, (x,), lambda g: (g - probs * g.sum(axis=axis, keepdims=True),), "log_softmax")


ACTIVATIONS = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "gelu": gelu}
