"""XOR: what one layer cannot do and two layers can.

XOR is 1 when exactly one input is 1. Its positive points (0,1) and (1,0) sit on one diagonal of
the unit square and its negative points on the other, so no straight line separates them: any
single-layer perceptron, step(w·x + b), gets at most 3 of the 4 points right. Two layers solve
it: XOR(a, b) = OR(a, b) AND NOT AND(a, b), three threshold units wired by hand — and a small
trained MLP finds an equivalent solution by gradient descent.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..autograd import Tensor
from ..layers import mlp
from .common import decision_regions, figure, fit_classifier, predict

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([0, 1, 1, 0])


def step(z: np.ndarray) -> np.ndarray:
    """Heaviside threshold: 1 where z > 0."""
    return (z > 0).astype(np.int64)


def perceptron_train(x: np.ndarray, y: np.ndarray, epochs: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Rosenblatt's rule, w ← w + (y - ŷ)·x, from a random start; returns (w, b) and accuracy."""
    w = rng.normal(size=x.shape[1])
    b = rng.normal()
    for _ in range(epochs):
        for xi, yi in zip(x, y):
            error = yi - step(xi @ w + b)
            w, b = w + error * xi, b + error
    return np.append(w, b), float((step(x @ w + b) == y).mean())


def best_linear_accuracy(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> float:
    """Best accuracy of step(w1 x1 + w2 x2 + b) over every (w1, w2, b) on `grid`³."""
    best = 0.0
    for w1, w2, b in itertools.product(grid, grid, grid):
        best = max(best, float((step(x @ np.array([w1, w2]) + b) == y).mean()))
    return best


def hand_built_xor(x: np.ndarray) -> np.ndarray:
    """Two-layer threshold network: OR and AND in the hidden layer, OR AND NOT AND on top."""
    or_unit = step(x[:, 0] + x[:, 1] - 0.5)
    and_unit = step(x[:, 0] + x[:, 1] - 1.5)
    return step(or_unit - and_unit - 0.5)  # fires for OR but not AND


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    rng = np.random.default_rng(seed)
    starts = 5 if quick else 20
    perceptron_accs = [perceptron_train(X, Y, 50, rng)[1] for _ in range(starts)]
    grid = np.linspace(-2, 2, 9 if quick else 21)
    best_linear = best_linear_accuracy(X, Y, grid)
    hand_acc = float((hand_built_xor(X) == Y).mean())

    net = mlp([2, 8, 2], activation="tanh", init="xavier", rng=rng)
    losses = fit_classifier(net, X, Y, epochs=300, lr=0.05, rng=rng)
    trained_acc = float((predict(net, X).argmax(1) == Y).mean())

    fig, axes = figure(3, size=(3.6, 3.4))
    w, _ = perceptron_train(X, Y, 50, np.random.default_rng(seed))
    lim = (-0.5, 1.5)
    decision_regions(axes[0], lambda p: step(p @ w[:2] + w[2]), X, Y, lim, f"single layer, perceptron rule ({100 * max(perceptron_accs):.0f}%)")
    decision_regions(axes[1], hand_built_xor, X, Y, lim, f"OR AND NOT AND ({100 * hand_acc:.0f}%)")
    decision_regions(axes[2], lambda p: net(Tensor(p)).data.argmax(1), X, Y, lim, f"trained 2-8-2 MLP ({100 * trained_acc:.0f}%)")

    result = {
        "perceptron_accuracies": perceptron_accs,
        "best_linear_accuracy_on_grid": best_linear,
        "hand_built_mlp_accuracy": hand_acc,
        "trained_mlp_accuracy": trained_acc,
        "trained_mlp_final_loss": losses[-1],
        "finding": (
            f"no single-layer perceptron fits XOR: the perceptron rule never converges (final accuracy "
            f"{100 * min(perceptron_accs):.0f}-{100 * max(perceptron_accs):.0f}% over {starts} starts) and the best weights on a "
            f"{len(grid)}^3 grid reach {100 * best_linear:.0f}%; the hand-built OR / AND / AND-NOT network gets "
            f"{100 * hand_acc:.0f}% and a trained 2-8-2 MLP {100 * trained_acc:.0f}%"
        ),
    }
    return result, fig
