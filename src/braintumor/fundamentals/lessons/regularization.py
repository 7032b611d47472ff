"""Overfitting, dropout and early stopping, on a small noisy classification problem.

Forty points of two interleaved half-moons, 15% of them with the wrong label, and a network
with some 17,000 weights. It can memorise every point, wrong labels included: training loss
goes to ~0 while the validation loss, after an early minimum, climbs as the network grows
confidently wrong on new points. Two remedies:

- **Dropout** randomly silences half the hidden units at each step (inverted: the survivors
  are scaled by 2, so evaluation uses the whole network unchanged); no unit can rely on a
  particular other one, which smooths the learnt boundary.
- **Early stopping** watches the validation loss, stops once it has not improved for
  `patience` epochs and restores the weights of the best epoch.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, no_grad
from ..layers import Activation, Dense, Dropout, Sequential
from ..losses import cross_entropy
from ..optim import Adam, EarlyStopping
from .common import decision_regions


def moons(n: int, rng: np.random.Generator, noise: float = 0.25, flip: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles with Gaussian noise; a share `flip` of the labels is wrong."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0, np.pi, n)
    x = np.stack([np.where(y == 0, np.cos(t), 1 - np.cos(t)), np.where(y == 0, np.sin(t), 0.5 - np.sin(t))], axis=1)
    x += noise * rng.standard_normal(x.shape)
    flipped = rng.random(n) < flip
    return x, np.where(flipped, 1 - y, y)


def network(dropout: float, seed: int, width: int = 128) -> Sequential:
    """2 -> width -> width -> 2 ReLU network, with dropout after each hidden layer if `dropout`."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in in (2, width):
        layers += [Dense(n_in, width, "he", rng), Activation("relu")]
        if dropout:
            layers.append(Dropout(dropout, rng))
    layers.append(Dense(width, 2, "xavier", rng))
    return Sequential(*layers)


def evaluate(net, x, y) -> tuple[float, float]:
    """Cross-entropy and accuracy in eval mode."""
    net.eval()
    with no_grad():
        logits = net(Tensor(x))
        loss = cross_entropy(logits, y).item()
    net.train()
    return loss, float((logits.data.argmax(1) == y).mean())


def train(net, x, y, x_val, y_val, epochs: int, stopper: EarlyStopping | None = None) -> dict:
    """Full-batch Adam; loss and accuracy per epoch on both sets (training set measured in eval mode)."""
    optimizer = Adam(net.parameters(), lr=0.01)
    history = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": []}
    for _ in range(epochs):
        optimizer.zero_grad()
        cross_entropy(net(Tensor(x)), y).backward()
        optimizer.step()
        for prefix, (xs, ys) in (("train", (x, y)), ("val", (x_val, y_val))):
            loss, acc = evaluate(net, xs, ys)
            history[f"{prefix}_loss"].append(loss)
            history[f"{prefix}_acc"].append(acc)
        if stopper is not None and stopper.step(history["val_loss"][-1], net.parameters()):
            break
    if stopper is not None:
        stopper.restore(net.parameters())
    return history


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    from .common import figure

    rng = np.random.default_rng(seed)
    x, y = moons(40, rng)
    x_val, y_val = moons(400, rng)
    epochs = 120 if quick else 300

    plain_net = network(0.0, seed)
    plain = train(plain_net, x, y, x_val, y_val, epochs)
    dropout_net = network(0.5, seed)
    dropped = train(dropout_net, x, y, x_val, y_val, epochs)
    stopper = EarlyStopping(patience=20, mode="min")
    early_net = network(0.0, seed)
    early = train(early_net, x, y, x_val, y_val, epochs, stopper)
    early_loss, early_acc = evaluate(early_net, x_val, y_val)

    fig, axes = figure(4, size=(3.6, 3.4))
    for ax, (label, net, acc) in zip(axes, (("no regularization", plain_net, plain["val_acc"][-1]),
                                            ("dropout 0.5", dropout_net, dropped["val_acc"][-1]),
                                            ("early stopping", early_net, early_acc))):
        net.eval()
        decision_regions(ax, lambda p, net=net: net(Tensor(p)).data.argmax(1), x, y, (-1.5, 2.5), f"{label}: val {100 * acc:.0f}%")
    epochs_axis = np.arange(1, epochs + 1)
    axes[3].semilogy(epochs_axis, plain["train_loss"], "C0-", lw=1, label="train, none")
    axes[3].semilogy(epochs_axis, plain["val_loss"], "C0--", lw=1, label="validation, none")
    axes[3].semilogy(epochs_axis, dropped["train_loss"], "C1-", lw=1, label="train, dropout")
    axes[3].semilogy(epochs_axis, dropped["val_loss"], "C1--", lw=1, label="validation, dropout")
    axes[3].axvline(stopper.best_epoch + 1, color="C2", lw=1, label=f"early stopping: epoch {stopper.best_epoch + 1}")
    axes[3].set_xlabel("epoch")
    axes[3].set_ylabel("cross-entropy")
    axes[3].legend(fontsize=7)

    best = int(np.argmin(plain["val_loss"]))
    result = {
        "train_points": len(x),
        "label_noise": 0.15,
        "no_regularization": {"final_train_loss": plain["train_loss"][-1], "final_train_acc": plain["train_acc"][-1],
                              "final_val_loss": plain["val_loss"][-1], "final_val_acc": plain["val_acc"][-1],
                              "best_val_loss": plain["val_loss"][best], "best_epoch": best + 1},
        "dropout": {"p": 0.5, "final_train_loss": dropped["train_loss"][-1], "final_val_loss": dropped["val_loss"][-1],
                    "final_val_acc": dropped["val_acc"][-1]},
        "early_stopping": {"patience": stopper.patience, "stopped_after": len(early["val_loss"]),
                           "restored_epoch": stopper.best_epoch + 1, "val_loss": early_loss, "val_acc": early_acc},
        "finding": (
            f"without regularization the network fits {100 * plain['train_acc'][-1]:.0f}% of the noisy training labels "
            f"(loss {plain['train_loss'][-1]:.3f}) while validation loss climbs from {plain['val_loss'][best]:.2f} "
            f"(epoch {best + 1}) to {plain['val_loss'][-1]:.2f}; dropout ends at validation loss {dropped['val_loss'][-1]:.2f}; "
            f"early stopping halts after {len(early['val_loss'])} epochs with epoch {stopper.best_epoch + 1}'s weights "
            f"(validation loss {early_loss:.2f}, accuracy {100 * early_acc:.0f}% vs {100 * plain['val_acc'][-1]:.0f}% unregularized)"
        ),
    }
    return result, fig
