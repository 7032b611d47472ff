"""Activation functions and their derivatives, the derivatives computed by the graph.

Each curve's derivative comes from `Tensor.backward` on ``f(x).sum()`` (each output depends
only on its own input, so the gradient is f'(x) pointwise) and is compared with the closed form.
"""

from __future__ import annotations

import math

import numpy as np

from .. import activations as act
from ..autograd import Tensor

_erf = np.vectorize(math.erf)


def closed_form_derivative(name: str, x: np.ndarray) -> np.ndarray:
    """f'(x) written out by hand."""
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if name == "relu":
        return (x > 0).astype(float)
    if name == "gelu":
        return 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    raise ValueError(name)


def run(quick: bool = False, **_) -> tuple[dict, object]:
    from .common import figure

    x = np.linspace(-5, 5, 201 if quick else 1001)
    values, derivatives, errors = {}, {}, {}
    for name, f in act.ACTIVATIONS.items():
        t = Tensor(x, requires_grad=True)
        y = f(t)
        y.sum().backward()
        values[name], derivatives[name] = y.data, t.grad
        errors[name] = float(np.abs(t.grad - closed_form_derivative(name, x)).max())

    logits = np.stack([x, np.zeros_like(x), np.ones_like(x)], axis=1)
    probs = act.softmax(Tensor(logits), axis=1).data

    fig, axes = figure(3, size=(4.0, 3.3))
    for name in values:
        axes[0].plot(x, values[name], label=name)
        axes[1].plot(x, derivatives[name], label=name)
    axes[0].set_title("f(x)")
    axes[1].set_title("f'(x) (by backward())")
    for k, label in enumerate(["logit x", "logit 0", "logit 1"]):
        axes[2].plot(x, probs[:, k], label=label)
    axes[2].set_title("softmax of (x, 0, 1)")
    for ax in axes:
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(-1.2, 2.5)

    gelu_min = int(values["gelu"].argmin())
    result = {
        "max_derivative": {name: float(d.max()) for name, d in derivatives.items()},
        "autograd_vs_closed_form_max_error": errors,
        "gelu_minimum": {"x": float(x[gelu_min]), "value": float(values["gelu"][gelu_min])},
        "softmax_rows_sum_to_one": bool(np.allclose(probs.sum(axis=1), 1.0)),
        "finding": (
            f"sigmoid' peaks at {derivatives['sigmoid'].max():.3f} (so each sigmoid layer shrinks a gradient at least 4x), "
            f"tanh' at {derivatives['tanh'].max():.3f}, ReLU' is 0 or 1, GELU dips to {values['gelu'][gelu_min]:.3f} "
            f"at x = {x[gelu_min]:.2f}; backward() matches the closed forms to {max(errors.values()):.1e}"
        ),
    }
    return result, fig
