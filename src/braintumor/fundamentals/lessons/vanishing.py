"""Vanishing and exploding gradients in a deep network.

Backpropagation multiplies, layer after layer, by the weight matrix and the activation's
derivative. sigmoid' is at most 1/4, so through a deep sigmoid network the gradient reaching
the first layers shrinks geometrically (vanishes). ReLU passes gradients unchanged where it is
active, and He initialization (Var = 2 / fan_in) compensates exactly for the half of the units
it switches off, so the gradient norm stays about the same in every layer. Twice He's standard
deviation doubles the gain per layer and the gradient explodes instead.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..layers import Dense, mlp
from ..losses import cross_entropy


def layer_gradient_norms(activation: str, init: str, depth: int, width: int, x: np.ndarray, y: np.ndarray, seed: int, scale: float = 0.1) -> list[float]:
    """Frobenius norm of each dense layer's weight gradient (input layer first) after one backward pass."""
    net = mlp([x.shape[1]] + [width] * depth + [int(y.max()) + 1], activation=activation, init=init, scale=scale, rng=np.random.default_rng(seed))
    cross_entropy(net(Tensor(x)), y).backward()
    return [float(np.linalg.norm(layer.weight.grad)) for layer in net.layers if isinstance(layer, Dense)]


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    from .common import figure

    rng = np.random.default_rng(seed)
    depth, width, n = (10, 64, 128) if quick else (20, 128, 256)
    x = rng.standard_normal((n, width))
    y = rng.integers(0, 4, n)
    cases = {
        "sigmoid, Xavier": ("sigmoid", "xavier", 0.0),
        "ReLU, He": ("relu", "he", 0.0),
        "ReLU, 2 x He σ": ("relu", "normal", 2 * math.sqrt(2.0 / width)),
    }
    norms = {label: layer_gradient_norms(a, i, depth, width, x, y, seed, s) for label, (a, i, s) in cases.items()}
    ratios = {label: v[0] / v[-1] for label, v in norms.items()}

    fig, axes = figure(1, size=(5.6, 3.8))
    for label, v in norms.items():
        axes[0].semilogy(range(1, len(v) + 1), v, "o-", ms=3, label=f"{label} (first/last {ratios[label]:.1e})")
    axes[0].set_xlabel("layer (1 = input side)")
    axes[0].set_ylabel("‖∂L/∂W‖")
    axes[0].set_title(f"{depth} hidden layers of {width}")
    axes[0].legend(fontsize=8)

    result = {
        "depth": depth,
        "width": width,
        "gradient_norms": norms,
        "first_over_last": ratios,
        "finding": (
            f"over {depth} hidden layers the first layer's gradient is {ratios['sigmoid, Xavier']:.1e} times the last's "
            f"with sigmoid (vanishing), {ratios['ReLU, He']:.2f} times with ReLU + He, and "
            f"{ratios['ReLU, 2 x He σ']:.1e} times with ReLU at twice He's σ (exploding)"
        ),
    }
    return result, fig
