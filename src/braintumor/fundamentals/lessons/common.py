"""Helpers shared by the lessons: figures, a small training loop, toy datasets."""

from __future__ import annotations

import time

import numpy as np
from matplotlib.figure import Figure

from ..autograd import Tensor, no_grad
from ..layers import Module
from ..losses import cross_entropy
from ..optim import Adam, batches


def figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.0, 3.4)):
    """A matplotlib Figure and its axes (no pyplot, so no display is ever needed)."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def predict(model: Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Model outputs for `x`, in eval mode and without building a graph."""
    model.eval()
    with no_grad():
        out = [model(Tensor(x[i : i + batch_size])).data for i in range(0, len(x), batch_size)]
    model.train()
    return np.concatenate(out)


def accuracy(model: Module, x: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose largest output is at the label's index."""
    return float((predict(model, x).argmax(axis=1) == y).mean())


def fit_classifier(model: Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 0.01, batch_size: int | None = None,
                   rng: np.random.Generator | None = None, optimizer=None) -> list[float]:
    """Train `model` with cross-entropy; return the training loss after each epoch.

    `batch_size` None means full-batch; `optimizer` defaults to Adam(lr).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    optimizer = optimizer or Adam(model.parameters(), lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in batches(len(x), batch_size or len(x), rng):
            optimizer.zero_grad()
            loss = cross_entropy(model(Tensor(x[idx])), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    return losses


def spirals(n: int, noise: float, rng: np.random.Generator, turns: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane: `n` points, labels 0/1. Not linearly separable."""
    label = rng.integers(0, 2, n)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2 * np.pi + 0.5
    x = np.stack([t * np.cos(t + np.pi * label), t * np.sin(t + np.pi * label)], axis=1) / (turns * 2 * np.pi)
    return x + noise * rng.standard_normal(x.shape), label


def decision_regions(ax, predict_fn, x: np.ndarray, y: np.ndarray, lim: tuple[float, float], title: str) -> None:
    """Shade the plane by predicted class and scatter the points on top."""
    grid = np.linspace(lim[0], lim[1], 200)
    gx, gy = np.meshgrid(grid, grid)
    pred = predict_fn(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    ax.contourf(gx, gy, pred, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fdd0a2"])
    ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 1, "#e6550d", "#3182bd"), s=14, edgecolors="k", linewidths=0.3)
    ax.set_title(title)
    ax.set_aspect("equal")


class Stopwatch:
    """``with Stopwatch() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
