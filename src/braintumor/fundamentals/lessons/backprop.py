"""Backpropagation two ways: gradients derived by hand versus the computation graph.

For a two-layer network with a softmax output and cross-entropy loss,

    A = X W1 + b1,  H = tanh(A),  Z = H W2 + b2,  L = -mean log softmax(Z)[y]

the chain rule, applied by hand from the loss backwards, gives

    dZ  = (softmax(Z) - onehot(y)) / N
    dW2 = Hᵀ dZ,            db2 = Σ_rows dZ
    dH  = dZ W2ᵀ,           dA  = dH ⊙ (1 - H²)
    dW1 = Xᵀ dA,            db1 = Σ_rows dA

The *analytical* route codes exactly these formulas; the *modular* route builds the graph from
operations that each know only their own local derivative and lets `backward()` chain them.
"""

from __future__ import annotations

import timeit

import numpy as np

from ..activations import tanh
from ..autograd import Tensor
from ..gradcheck import relative_error
from ..losses import cross_entropy, one_hot


def analytical_gradients(x, y, w1, b1, w2, b2) -> tuple[float, list[np.ndarray]]:
    """Loss and [dW1, db1, dW2, db2] from the hand-derived formulas."""
    n = len(x)
    h = np.tanh(x @ w1 + b1)
    z = h @ w2 + b2
    z_shift = z - z.max(axis=1, keepdims=True)
    log_p = z_shift - np.log(np.exp(z_shift).sum(axis=1, keepdims=True))
    target = one_hot(y, z.shape[1])
    loss = -(log_p * target).sum() / n
    dz = (np.exp(log_p) - target) / n
    dw2, db2 = h.T @ dz, dz.sum(axis=0)
    da = (dz @ w2.T) * (1.0 - h * h)
    dw1, db1 = x.T @ da, da.sum(axis=0)
    return float(loss), [dw1, db1, dw2, db2]


def graph_gradients(x, y, w1, b1, w2, b2) -> tuple[float, list[np.ndarray]]:
    """Loss and the same four gradients from the computation graph."""
    params = [Tensor(p, requires_grad=True) for p in (w1, b1, w2, b2)]
    tw1, tb1, tw2, tb2 = params
    loss = cross_entropy(tanh(Tensor(x) @ tw1 + tb1) @ tw2 + tb2, y)
    loss.backward()
    return loss.item(), [p.grad for p in params]


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    from .common import figure

    rng = np.random.default_rng(seed)
    n, d, hidden, classes = (64, 10, 32, 4) if quick else (256, 20, 64, 4)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, classes, n)
    params = (rng.standard_normal((d, hidden)) * 0.3, rng.standard_normal(hidden) * 0.1,
              rng.standard_normal((hidden, classes)) * 0.3, rng.standard_normal(classes) * 0.1)

    loss_a, grads_a = analytical_gradients(x, y, *params)
    loss_g, grads_g = graph_gradients(x, y, *params)
    names = ["W1", "b1", "W2", "b2"]
    errors = {name: relative_error(a, g) for name, a, g in zip(names, grads_a, grads_g)}

    repeats = 20 if quick else 200
    t_analytical = min(timeit.repeat(lambda: analytical_gradients(x, y, *params), number=repeats, repeat=3)) / repeats
    t_graph = min(timeit.repeat(lambda: graph_gradients(x, y, *params), number=repeats, repeat=3)) / repeats

    fig, axes = figure(2, size=(4.2, 3.6))
    for name, a, g in zip(names, grads_a, grads_g):
        axes[0].scatter(a.ravel(), g.ravel(), s=6, label=name)
    lim = max(np.abs(np.concatenate([a.ravel() for a in grads_a]))) * 1.1
    axes[0].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    axes[0].set_xlabel("analytical gradient")
    axes[0].set_ylabel("computation-graph gradient")
    axes[0].set_title("same values")
    axes[0].legend(fontsize=8)
    axes[1].bar(["analytical", "graph"], [1e3 * t_analytical, 1e3 * t_graph], color=["#3182bd", "#e6550d"])
    axes[1].set_ylabel("ms per forward + backward")
    axes[1].set_title(f"batch {n}, {d}-{hidden}-{classes} MLP")

    result = {
        "loss_analytical": loss_a,
        "loss_graph": loss_g,
        "relative_error": errors,
        "seconds_analytical": t_analytical,
        "seconds_graph": t_graph,
        "finding": (
            f"hand-derived and graph gradients agree to {max(errors.values()):.1e} relative error; "
            f"the hand-written pass takes {1e3 * t_analytical:.3f} ms, the graph {1e3 * t_graph:.3f} ms "
            f"({t_graph / t_analytical:.1f}x, the price of generality: every node is a Python object)"
        ),
    }
    return result, fig
