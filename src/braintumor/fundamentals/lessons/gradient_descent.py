"""Batch, stochastic and mini-batch gradient descent on the same linear regression.

All three train the same linear model with the same loss (MSE), each with its own learning rate
(a step from a single sample must be smaller than one from the exact gradient), and differ only in
how many samples each step sees. Batch descent follows the exact gradient: its loss falls smoothly, but it needs
a pass over all the data per step. Stochastic descent steps after every sample: many cheap,
noisy steps, some of which make the full loss *worse*. Mini-batches average out most of the
noise while still taking many steps per epoch.
"""

from __future__ import annotations

import time

import numpy as np

from ..autograd import Tensor, no_grad
from ..layers import Dense
from ..losses import mse
from ..optim import SGD, batches


def descend(x, y, batch_size: int, epochs: int, lr: float, rng: np.random.Generator) -> dict:
    """Train a linear model; after every step record the full training loss and the seconds spent
    on steps so far (the loss evaluation itself is not timed)."""
    model = Dense(x.shape[1], 1, init="zero")
    optimizer = SGD(model.parameters(), lr)
    full_losses, seconds, spent = [], [], 0.0
    for _ in range(epochs):
        for idx in batches(len(x), batch_size, rng):
            start = time.perf_counter()
            optimizer.zero_grad()
            loss = mse(model(Tensor(x[idx])), Tensor(y[idx]))
            loss.backward()
            optimizer.step()
            spent += time.perf_counter() - start
            with no_grad():
                full_losses.append(mse(model(Tensor(x)), Tensor(y)).item())
            seconds.append(spent)
    return {"loss": np.array(full_losses), "seconds": np.array(seconds), "steps_per_epoch": -(-len(x) // batch_size)}


def run(quick: bool = False, seed: int = 0, **_) -> tuple[dict, object]:
    from .common import figure

    rng = np.random.default_rng(seed)
    n, d = (400, 5) if quick else (2000, 10)
    x = rng.standard_normal((n, d))
    w_true = rng.standard_normal((d, 1))
    y = x @ w_true + 0.3 * rng.standard_normal((n, 1))
    w_best, *_ = np.linalg.lstsq(np.hstack([x, np.ones((n, 1))]), y, rcond=None)
    best_loss = float(np.mean((np.hstack([x, np.ones((n, 1))]) @ w_best - y) ** 2))
    target = 1.1 * best_loss
    # name: (batch size, epochs, learning rate); each rate is about the largest that behaves well
    settings = {"batch": (n, 60, 0.2), "mini-batch": (32, 4, 0.05), "stochastic": (1, 2, 0.005)}
    if quick:
        settings = {"batch": (n, 40, 0.2), "mini-batch": (32, 3, 0.05), "stochastic": (1, 1, 0.005)}

    runs, summary = {}, {}
    for name, (batch_size, epochs, lr) in settings.items():
        r = descend(x, y, batch_size, epochs, lr, np.random.default_rng(seed))
        runs[name] = r
        hit = np.flatnonzero(r["loss"] <= target)
        steps = len(r["loss"])
        summary[name] = {
            "batch_size": batch_size,
                "steps": steps,
            "final_loss": float(r["loss"][-1]),
            # rises smaller than 1e-9 relative are floating-point rounding at the minimum, not noise
            "share_of_steps_that_raised_the_loss": float((np.diff(r["loss"]) > 1e-9 * r["loss"][1:]).mean()),
            "epochs_to_target": None if hit.size == 0 else float((hit[0] + 1) / r["steps_per_epoch"]),
            "seconds_to_target": None if hit.size == 0 else float(r["seconds"][hit[0]]),
        }

    fig, axes = figure(2, size=(4.6, 3.6))
    for name, r in runs.items():
        epochs_axis = np.arange(1, len(r["loss"]) + 1) / r["steps_per_epoch"]
        axes[0].plot(epochs_axis, r["loss"], label=name, lw=1)
        axes[1].plot(r["seconds"], r["loss"], label=name, lw=1)
    for ax, xlabel in zip(axes, ["epochs (passes over the data)", "seconds spent on steps"]):
        ax.axhline(target, color="k", ls="--", lw=0.8, label="target (1.1 x least squares)")
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training MSE")
        ax.legend(fontsize=8)

    def fmt(name):
        s = summary[name]
        reach = "never" if s["epochs_to_target"] is None else f"after {s['epochs_to_target']:.2f} epochs / {1e3 * s['seconds_to_target']:.0f} ms"
        return f"{name}: {100 * s['share_of_steps_that_raised_the_loss']:.0f}% of steps raised the loss, target reached {reach}"

    result = {
        "least_squares_loss": best_loss,
        "target_loss": target,
        "methods": summary,
        "finding": "; ".join(fmt(name) for name in summary),
    }
    return result, fig
