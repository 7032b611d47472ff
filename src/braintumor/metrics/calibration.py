"""Are the predicted probabilities honest? Expected calibration error, reliability diagram, and
temperature scaling.

A model is calibrated when, of all the images it labels with 90% confidence, 90% are right.
The expected calibration error (ECE) sorts predictions into equal-width bins of confidence (the
top probability) and averages ``|accuracy - mean confidence|`` over the bins, weighted by the
share of images in each bin.

Temperature scaling divides all logits by one number ``T`` fitted on the validation set to
minimise the negative log-likelihood (``T > 1`` softens over-confident predictions, ``T < 1``
sharpens under-confident ones, e.g. after label smoothing). It never changes which class wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

DEFAULT_BINS = 15
T_RANGE = (0.05, 20.0)


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be N x C with N = len(labels); got {probs.shape} for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no samples: probs and labels are empty")
    return probs, labels


def _binned(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence, correctness and confidence-bin index of each prediction."""
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Rounding first keeps a confidence of exactly k / bins in bin k - 1 despite float error.
    index = np.clip(np.ceil(np.round(confidence * bins, 9)).astype(int) - 1, 0, bins - 1)
    return confidence, correct, index


def _one_hot(index: np.ndarray, bins: int) -> np.ndarray:
    """``N x bins`` matrix with a 1 in each prediction's bin."""
    out = np.zeros((len(index), bins))
    out[np.arange(len(index)), index] = 1.0
    return out


def reliability_bins(probs, labels, bins: int = DEFAULT_BINS) -> list[dict]:
    """Confidence, accuracy and count of predictions in `bins` equal-width confidence bins.

    Bin ``k`` holds confidences in ``(k / bins, (k + 1) / bins]`` (the first also holds 0).
    Empty bins are listed with count 0 and confidence and accuracy None.
    """
    probs, labels = _check(probs, labels)
    confidence, correct, index = _binned(probs, labels, bins)
    out = []
    for k in range(bins):
        inside = index == k
        n = int(inside.sum())
        out.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": n,
                "confidence": float(confidence[inside].mean()) if n else None,
                "accuracy": float(correct[inside].mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(probs, labels, bins: int = DEFAULT_BINS) -> float:
    """ECE: the count-weighted mean of ``|accuracy - confidence|`` over confidence bins."""
    table = reliability_bins(probs, labels, bins)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"]))


def ece_interval(
    probs, labels, bins: int = DEFAULT_BINS, level: float = 0.95, resamples: int = 1000, seed: int = 0, groups=None
) -> list[float]:
    """Percentile bootstrap confidence interval ``[low, high]`` of the ECE.

    The test set is resampled with replacement `resamples` times (seeded: the same inputs give
    the same interval) and the ECE recomputed on each resample, with the same bins. With
    `groups` (the near-duplicate group of each image), whole groups are resampled, as in
    `braintumor.metrics.stats.bootstrap_ci`.
    """
    from braintumor.metrics.stats import resample_weights

    probs, labels = _check(probs, labels)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    confidence, correct, index = _binned(probs, labels, bins)
    onehot = _one_hot(index, bins)
    weights = resample_weights(len(labels), resamples, seed, groups)  # B x N draw counts
    gap = weights @ (onehot * (correct - confidence)[:, None])  # B x bins: summed (correct - confidence)
    ece = np.abs(gap).sum(axis=1) / weights.sum(axis=1)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return [float(v) for v in np.percentile(ece, tails)]


def ece_if_calibrated(probs, bins: int = DEFAULT_BINS, resamples: int = 1000, seed: int = 0, groups=None) -> dict[str, float]:
    """The ECE that a perfectly calibrated model with these confidences would measure.

    ECE is biased upward on small test sets: even a model whose every confidence is exact scores
    above 0, because each bin's accuracy is measured on few images. This simulates that model:
    each prediction is right with probability equal to its confidence, `resamples` times
    (seeded). Returns ``{"mean": ..., "p95": ...}``, the mean and 95th percentile of the
    simulated ECE. A measured ECE near ``mean`` is what sampling alone produces.

    With `groups` (the near-duplicate group of each image), the images of a group share one
    random draw, so copies with the same confidence are right or wrong together, as a model's
    copies are: a test set of ``G`` groups then measures like ``G`` images, not ``N``. Groups
    that are all singletons numbered ``0..N-1`` in image order give exactly the result without.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be a non-empty N x C array, got shape {probs.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    confidence, _, index = _binned(probs, np.zeros(len(probs), dtype=int), bins)
    from braintumor.metrics.stats import group_index

    n = len(probs)
    item_group, g = group_index(n, groups)
    onehot = _one_hot(index, bins)
    rng = np.random.default_rng(seed)
    ece = np.empty(resamples)
    for start in range(0, resamples, 250):  # chunks keep the B x N draws small
        draws = rng.random((min(250, resamples - start), g))[:, item_group] < confidence
        ece[start : start + len(draws)] = np.abs((draws - confidence) @ onehot).sum(axis=1) / n
    return {"mean": float(ece.mean()), "p95": float(np.percentile(ece, 95))}


def as_logits(probs) -> np.ndarray:
    """Logits equivalent to `probs` (their logarithm; softmax ignores the missing constant)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, 1.0))


def with_temperature(probs, temperature: float) -> np.ndarray:
    """Probabilities after dividing the logits behind `probs` by `temperature`.

    ``with_temperature(p, 1 / T)`` undoes a temperature ``T`` that `p` was computed with.
    """
    return softmax(as_logits(probs) / temperature, axis=1)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under ``softmax(logits / temperature)``."""
    logits, labels = _check(logits, labels)
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels) -> float:
    """The temperature in `T_RANGE` that minimises the NLL of `labels`.

    Parameters
    ----------
    logits : array, N x C
        Validation logits (or `as_logits` of validation probabilities computed at T = 1).
    labels : array of int
        True class of each validation image.

    Notes
    -----
    The search runs over ``log T`` (bounded scalar minimisation), where the NLL is smooth and
    the range is symmetric around T = 1. A validation set that the model gets entirely right
    pushes T to the lower bound, the sharpest allowed.
    """
    logits, labels = _check(logits, labels)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(float(np.log(T_RANGE[0])), float(np.log(T_RANGE[1]))),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def plot_reliability(table: list[dict], path: Path, title: str = "Reliability diagram") -> None:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and
    the number of predictions per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from braintumor.metrics.figures import save_figure

    width = table[0]["high"] - table[0]["low"]
    centers = [b["low"] + width / 2 for b in table]
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.8, 5.4), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in table if b["count"]]
    ax.bar([b["low"] + width / 2 for b in filled], [b["accuracy"] for b in filled], width=width * 0.95,
           color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    ax.plot([b["confidence"] for b in filled], [b["confidence"] for b in filled], "o", color="tab:red",
            markersize=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centers, [b["count"] for b in table], width=width * 0.95, color="gray")
    ax_n.set_yscale("symlog")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("confidence (top probability)")
    ax_n.set_ylabel("images")
    fig.tight_layout()
    save_figure(fig, path)
