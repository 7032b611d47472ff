"""Overfitting, dropout and early stopping, on a small noisy regression problem.

A network with far more weights than there are training points can pass through every noisy
point: the training loss keeps falling while the validation loss, after an early minimum, rises
again — the network has learnt the noise. Two remedies:

- **Dropout** randomly silences half the hidden units at each step (inverted: the survivors
  are scaled by 2, so evaluation uses the whole network unchanged); no unit can rely on a
  particular other one, which smooths the learnt function.
- **Early stopping** watches the validation loss, stops once it has not improved for
  `patience` epochs and restores the weights of the best epoch.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, no_grad
from ..layers import Activation, Dense, Dropout, Sequential
from ..losses import mse
from ..optim import Adam, EarlyStopping


def make_data(n: int, rng: np.random.Generator, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(rng.uniform(-1, 1, (n, 1)), axis=0)
    return x, np.sin(3 * x) + noise * rng.standard_normal((n, 1))


def network(dropout: float, seed: int, width: int = 128) -> Sequential:
    rng = np.random.default_rng(seed)
    layers = [Dense(1, width, "he", rng), Activation("relu")]
    if dropout:
        layers.append(Dropout(dropout, rng))
    layers += [Dense(width, width, "he", rng), Activation("relu")]
    if dropout:
        layers.append(Dropout(dropout, rng))
    layers.append(Dense(width, 1, "he", rng))
    return Sequential(*layers)


def evaluate(net, x, y) -> float:
    net.eval()
    with no_grad():
        loss = mse(net(Tensor(x)), Tensor(y)).item()
    net.train()
    return loss


def train(net, x, y, x_val, y_val, epochs: int, stopper: EarlyStopping | None = None) -> dict:
    """Full-batch Adam; train and validation MSE per epoch (train measured in eval mode)."""
    optimizer = Adam(net.parameters(), lr=0.01)
    history = {"train": [], "val": []}
    for _ in range(epochs):
        optimizer.zero_grad()
        mse(net(Tensor(x)), Tensor(y)).backward()
        optimizer.step()
        history["train"].append(evaluate(net, x, y))
        history["val"].append(evaluate(net, x_val, y_val))
        if stopper is not None and stopper.step(history["val"][-1], net.parameters()):
            break
    if stopper is not None:
        stopper.restore(net.parameters())
    return history


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    from .common import figure

    rng = np.random.default_rng(seed)
    noise = 0.3
    x, y = make_data(20, rng, noise)
    x_val, y_val = make_data(300, rng, noise)
    epochs = 400 if quick else 1000

    plain_net = network(0.0, seed)
    plain = train(plain_net, x, y, x_val, y_val, epochs)
    dropout_net = network(0.5, seed)
    dropped = train(dropout_net, x, y, x_val, y_val, epochs)
    stopper = EarlyStopping(patience=30, mode="min")
    early_net = network(0.0, seed)
    early = train(early_net, x, y, x_val, y_val, epochs, stopper)
    early_val = evaluate(early_net, x_val, y_val)

    fig, axes = figure(2, size=(4.6, 3.6))
    grid = np.linspace(-1, 1, 300)[:, None]
    axes[0].scatter(x_val, y_val, s=4, c="0.75", label="validation")
    axes[0].scatter(x, y, s=18, c="k", label="training (20 points)")
    axes[0].plot(grid, np.sin(3 * grid), "k--", lw=0.8, label="sin 3x")
    for label, net in (("no regularization", plain_net), ("dropout 0.5", dropout_net), ("early stopping", early_net)):
        net.eval()
        with no_grad():
            axes[0].plot(grid, net(Tensor(grid)).data, label=label)
    axes[0].set_ylim(-2, 2)
    axes[0].legend(fontsize=7)
    epochs_axis = np.arange(1, epochs + 1)
    axes[1].semilogy(epochs_axis, plain["train"], "C0-", lw=1, label="train, none")
    axes[1].semilogy(epochs_axis, plain["val"], "C0--", lw=1, label="validation, none")
    axes[1].semilogy(epochs_axis, dropped["train"], "C1-", lw=1, label="train, dropout")
    axes[1].semilogy(epochs_axis, dropped["val"], "C1--", lw=1, label="validation, dropout")
    axes[1].axvline(stopper.best_epoch + 1, color="C2", lw=1, label=f"early stop: best epoch {stopper.best_epoch + 1}")
    axes[1].axhline(noise**2, color="k", ls=":", lw=0.8, label="noise variance")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("MSE")
    axes[1].legend(fontsize=7)

    best_epoch = int(np.argmin(plain["val"]))
    result = {
        "noise_variance": noise**2,
        "no_regularization": {"final_train": plain["train"][-1], "final_val": plain["val"][-1],
                              "best_val": plain["val"][best_epoch], "best_epoch": best_epoch + 1},
        "dropout": {"p": 0.5, "final_train": dropped["train"][-1], "final_val": dropped["val"][-1]},
        "early_stopping": {"patience": stopper.patience, "stopped_after": len(early["val"]),
                           "restored_epoch": stopper.best_epoch + 1, "val": early_val},
        "finding": (
            f"without regularization the training MSE falls to {plain['train'][-1]:.3f} (below the noise variance "
            f"{noise**2:.2f}) while validation MSE rises from {plain['val'][best_epoch]:.3f} (epoch {best_epoch + 1}) "
            f"to {plain['val'][-1]:.3f}; dropout ends at validation {dropped['val'][-1]:.3f}; early stopping halts "
            f"after {len(early['val'])} epochs and restores epoch {stopper.best_epoch + 1} (validation {early_val:.3f})"
        ),
    }
    return result, fig
