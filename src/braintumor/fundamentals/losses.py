"""Loss functions, built from the graph's operations so their gradients come for free."""

from __future__ import annotations

import numpy as np

from .activations import log_softmax
from .autograd import Tensor, absolute, as_tensor


def _check_same_shape(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} differs from target shape {target.shape}")


def mse(pred, target) -> Tensor:
    """Mean squared error, mean((pred - target)²)."""
    pred, target = as_tensor(pred), as_tensor(target, getattr(pred, "dtype", None))
    _check_same_shape(pred, target, "mse")
    diff = pred - target
    return (diff * diff).mean()  # diff is used twice: its gradient gets both contributions


def mae(pred, target) -> Tensor:
    """Mean absolute error, mean|pred - target|."""
    pred, target = as_tensor(pred), as_tensor(target, getattr(pred, "dtype", None))
    _check_same_shape(pred, target, "mae")
    return absolute(pred - target).mean()


def one_hot(labels, num_classes: int, dtype=np.float64) -> np.ndarray:
    """``(N,)`` integer labels as an ``(N, num_classes)`` 0/1 matrix."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} and shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.size, num_classes), dtype=dtype)
    out[np.arange(labels.size), labels] = 1.0
    return out


def cross_entropy(logits, labels) -> Tensor:
    """Mean cross-entropy of integer `labels` under the softmax of ``(N, C)`` `logits`.

    -mean_i log softmax(z_i)[y_i], via `log_softmax` (log-sum-exp), so very large or very
    small logits give a finite loss. Its gradient with respect to the logits is
    (softmax(z) - onehot(y)) / N.
    """
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy takes (N, C) logits, got shape {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: {logits.shape[0]} rows of logits but labels of shape {labels.shape}")
    target = one_hot(labels, logits.shape[1], logits.dtype)
    return -(log_softmax(logits, axis=1) * target).sum(axis=1).mean()
