"""How many layers and how many neurons? A sweep chosen on validation data.

Every depth × width pair is trained the same way on two interleaved spirals (1.5 turns each); the pair with the
best *validation* accuracy is chosen (the smaller network on a tie) and only that one is scored
on the test set. Depth 0 is a linear model (logistic regression), which cannot bend its
decision boundary around a spiral.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..layers import mlp
from .common import accuracy, decision_regions, figure, fit_classifier, spirals


TURNS = 1.5  # how far each spiral winds: one hidden layer is not enough at 1.5 turns


def n_params(sizes: list[int]) -> int:
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    rng = np.random.default_rng(seed)
    n = 300 if quick else 600
    x_train, y_train = spirals(n, 0.04, rng, TURNS)
    x_val, y_val = spirals(n // 2, 0.04, rng, TURNS)
    x_test, y_test = spirals(n // 2, 0.04, rng, TURNS)
    depths = [0, 1, 2] if quick else [0, 1, 2, 3]
    widths = [4, 32] if quick else [4, 16, 64]
    epochs = 120 if quick else 150

    rows = []
    models = {}
    for depth in depths:
        for width in widths if depth else widths[:1]:
            sizes = [2] + [width] * depth + [2]
            net = mlp(sizes, activation="tanh", init="xavier", rng=np.random.default_rng(seed))
            fit_classifier(net, x_train, y_train, epochs=epochs, lr=0.02, batch_size=64, rng=np.random.default_rng(seed))
            rows.append({"depth": depth, "width": width if depth else 0, "parameters": n_params(sizes),
                         "train_accuracy": accuracy(net, x_train, y_train), "val_accuracy": accuracy(net, x_val, y_val)})
            models[(depth, rows[-1]["width"])] = net
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["parameters"]))
    chosen = models[(best["depth"], best["width"])]
    test_acc = accuracy(chosen, x_test, y_test)
    linear = next(r for r in rows if r["depth"] == 0)

    fig, axes = figure(2, size=(4.4, 3.8))
    table = np.full((len(depths), len(widths)), np.nan)
    for r in rows:
        cols = range(len(widths)) if r["depth"] == 0 else [widths.index(r["width"])]
        for c in cols:
            table[depths.index(r["depth"]), c] = r["val_accuracy"]
    image = axes[0].imshow(table, cmap="viridis", vmin=0.5, vmax=1.0)
    for i in range(len(depths)):
        for j in range(len(widths)):
            axes[0].text(j, i, f"{100 * table[i, j]:.0f}", ha="center", va="center", color="w")
    axes[0].set_xticks(range(len(widths)), [str(w) for w in widths])
    axes[0].set_yticks(range(len(depths)), [f"{d} (linear)" if d == 0 else str(d) for d in depths])
    axes[0].set_xlabel("neurons per hidden layer")
    axes[0].set_ylabel("hidden layers")
    axes[0].set_title("validation accuracy (%)")
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    decision_regions(axes[1], lambda p: chosen(Tensor(p)).data.argmax(1), x_test, y_test, (-1.3, 1.3),
                     f"chosen: {best['depth']}x{best['width']}, test {100 * test_acc:.0f}%")

    result = {
        "table": rows,
        "chosen": {"depth": best["depth"], "width": best["width"], "val_accuracy": best["val_accuracy"]},
        "chosen_test_accuracy": test_acc,
        "finding": (
            f"the linear model reaches {100 * linear['val_accuracy']:.0f}% validation accuracy on the spirals; "
            f"the sweep picks {best['depth']} hidden layer(s) of {best['width']} neurons "
            f"({100 * best['val_accuracy']:.0f}% validation, {100 * test_acc:.0f}% test)"
        ),
    }
    return result, fig
