"""Vanishing and exploding gradients in a deep network.

Backpropagation carries the error signal δ = ∂L/∂a (a: a layer's pre-activation) from the
output back to the input, multiplying at every layer by the weights and the activation's
derivative. sigmoid' is at most 1/4, so through a deep sigmoid network the signal reaching the
first layers shrinks geometrically: it *vanishes*, and those layers barely learn. ReLU passes
the signal unchanged where it is active, and He initialization (Var = 2 / fan_in) compensates
exactly for the half of the units it switches off, so δ keeps its size through every layer.
Twice He's σ doubles the gain per layer and δ *explodes* instead.

The weight gradient of a layer is (its input)ᵀ δ. With ReLU at twice He's σ the forward
activations grow layer by layer as fast as δ grows backwards, so the weight-gradient norms
stay level even though δ explodes — the figure shows both.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..layers import Dense, mlp
from ..losses import cross_entropy


def gradient_norms(activation: str, init: str, depth: int, width: int, x: np.ndarray, y: np.ndarray, seed: int, scale: float = 0.1) -> dict:
    """Per dense layer (input side first): ‖δ‖ averaged over the batch, and ‖∂L/∂W‖, after one backward pass."""
    net = mlp([x.shape[1]] + [width] * depth + [int(y.max()) + 1], activation=activation, init=init, scale=scale, rng=np.random.default_rng(seed))
    h, pre_activations = Tensor(x), []
    for layer in net.layers:
        h = layer(h)
        if isinstance(layer, Dense):
            pre_activations.append(h.retain_grad())
    cross_entropy(h, y).backward()
    dense = [layer for layer in net.layers if isinstance(layer, Dense)]
    return {
        "signal": [float(np.linalg.norm(a.grad, axis=1).mean()) for a in pre_activations],
        "weight": [float(np.linalg.norm(layer.weight.grad)) for layer in dense],
    }


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
    norms = {label: gradient_norms(a, i, depth, width, x, y, seed, s) for label, (a, i, s) in cases.items()}
    signal_ratio = {label: v["signal"][0] / v["signal"][-1] for label, v in norms.items()}
    weight_ratio = {label: v["weight"][0] / v["weight"][-1] for label, v in norms.items()}

    fig, axes = figure(2, size=(4.8, 3.8))
    for label, v in norms.items():
        layers = range(1, len(v["signal"]) + 1)
        axes[0].semilogy(layers, v["signal"], "o-", ms=3, label=f"{label} (first/last {signal_ratio[label]:.1e})")
        axes[1].semilogy(layers, v["weight"], "o-", ms=3, label=f"{label} (first/last {weight_ratio[label]:.1e})")
    axes[0].set_ylabel("‖∂L/∂a‖ (backpropagated signal)")
    axes[1].set_ylabel("‖∂L/∂W‖ (weight gradient)")
    for ax in axes:
        ax.set_xlabel("layer (1 = input side)")
        ax.set_title(f"{depth} hidden layers of {width}", fontsize=9)
        ax.legend(fontsize=7)

    result = {
        "depth": depth,
        "width": width,
        "norms": norms,
        "signal_first_over_last": signal_ratio,
        "weight_gradient_first_over_last": weight_ratio,
        "finding": (
            f"through {depth} hidden layers the backpropagated signal at the first layer is "
            f"{signal_ratio['sigmoid, Xavier']:.1e} of the last layer's with sigmoid (vanishing; weight gradients "
            f"{weight_ratio['sigmoid, Xavier']:.1e}), {signal_ratio['ReLU, He']:.2f} with ReLU + He, and "
            f"{signal_ratio['ReLU, 2 x He σ']:.1e} with ReLU at twice He's σ (exploding)"
        ),
    }
    return result, fig
