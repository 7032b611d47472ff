"""Weight initialization: symmetry breaking and the scale of the first weights.

If every weight starts at zero, all hidden units of a layer compute the same value, receive the
same gradient and take the same step — forever. The layer behaves like a single unit however
wide it is ("symmetry is never broken"). Random weights break the tie, but their scale matters:
too small and the signal (and its gradient) shrinks layer by layer, too large and tanh units
saturate where their derivative is ~0. Xavier/Glorot chooses the scale that keeps the variance
of the signal steady through the layers.

Plain gradient descent (with momentum) is used on purpose: Adam rescales every gradient and
would hide part of the effect of the scale.
"""

from __future__ import annotations

import numpy as np

from ..layers import Dense, mlp
from ..optim import SGD
from .common import accuracy, figure, fit_classifier, spirals


def distinct_units(weight: np.ndarray, decimals: int = 10) -> int:
    """Number of different hidden units (columns of a dense weight), up to rounding."""
    return len(np.unique(np.round(weight.T, decimals), axis=0))


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    rng = np.random.default_rng(seed)
    n = 300 if quick else 600
    x, y = spirals(n, 0.04, rng)
    x_val, y_val = spirals(n, 0.04, rng)
    width, depth = 16, 4
    epochs = 60 if quick else 200
    sizes = [2] + [width] * depth + [2]
    schemes = {
        "zero": ("zero", 0.0),
        "normal σ=0.01 (too small)": ("normal", 0.01),
        "Xavier/Glorot": ("xavier", 0.0),
        "normal σ=3 (too large)": ("normal", 3.0),
    }
    rows, curves = {}, {}
    for label, (scheme, scale) in schemes.items():
        net = mlp(sizes, activation="tanh", init=scheme, scale=scale, rng=np.random.default_rng(seed))
        optimizer = SGD(net.parameters(), lr=0.05, momentum=0.9)
        curves[label] = fit_classifier(net, x, y, epochs, batch_size=32, rng=np.random.default_rng(seed), optimizer=optimizer)
        first = next(layer for layer in net.layers if isinstance(layer, Dense))
        rows[label] = {
            "scheme": scheme,
            "scale": scale,
            "distinct_first_layer_units": distinct_units(first.weight.data),
            "final_train_loss": curves[label][-1],
            "train_accuracy": accuracy(net, x, y),
            "val_accuracy": accuracy(net, x_val, y_val),
        }

    fig, axes = figure(2, size=(4.4, 3.5))
    for label, losses in curves.items():
        axes[0].plot(np.arange(1, len(losses) + 1), losses, label=label)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training cross-entropy")
    axes[0].set_title(f"tanh MLP {'-'.join(map(str, sizes))}, SGD + momentum")
    axes[0].legend(fontsize=8)
    labels = list(rows)
    axes[1].bar(range(len(labels)), [rows[k]["val_accuracy"] for k in labels], color="#3182bd")
    axes[1].set_xticks(range(len(labels)), [k.split(" (")[0] for k in labels], rotation=20, fontsize=8)
    axes[1].axhline(0.5, color="k", ls="--", lw=0.8)
    axes[1].set_ylabel("validation accuracy")
    for i, k in enumerate(labels):
        axes[1].text(i, rows[k]["val_accuracy"] + 0.01, f"distinct units: {rows[k]['distinct_first_layer_units']}", ha="center", fontsize=8)

    zero, xavier = rows["zero"], rows["Xavier/Glorot"]
    small, large = rows["normal σ=0.01 (too small)"], rows["normal σ=3 (too large)"]
    result = {
        "network": sizes,
        "schemes": rows,
        "finding": (
            f"zero init leaves {zero['distinct_first_layer_units']} distinct unit(s) of {width} after training "
            f"(validation {100 * zero['val_accuracy']:.0f}%); Xavier keeps {xavier['distinct_first_layer_units']} and reaches "
            f"{100 * xavier['val_accuracy']:.0f}%; σ=0.01 ends at loss {small['final_train_loss']:.3f} "
            f"({100 * small['val_accuracy']:.0f}%), σ=3 at {large['final_train_loss']:.3f} ({100 * large['val_accuracy']:.0f}%) "
            f"vs Xavier's {xavier['final_train_loss']:.3f}"
        ),
    }
    return result, fig
