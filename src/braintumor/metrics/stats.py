"""How sure a test figure is: bootstrap confidence intervals, and one-vs-rest ROC-AUC.

A test set of a few hundred images measures accuracy only up to a few percentage points. The
percentile bootstrap resamples the test set with replacement many times, recomputes the metric on
each resample, and reports the middle 95% of those values.

Copies of one image are not independent test cases: a model that gets one copy wrong gets the
others wrong too, so resampling single images would make an interval too narrow on a test set
with duplicates. Given each image's near-duplicate group (`braintumor.data.duplicates`), the
bootstrap resamples *groups* instead (a cluster bootstrap): a group drawn twice brings all its
images twice. With every image a group of its own, that is the ordinary bootstrap.

Resampling is done with multinomial counts: resample ``b`` uses image ``i`` ``w[b, i]`` times, so
its confusion matrix is ``w[b] @ E`` where row ``i`` of ``E`` is the one-hot (true, predicted)
cell of image ``i``. All resamples are computed at once, exactly as if drawn one by one.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

DEFAULT_RESAMPLES = 2000


def _check(labels, pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=int)
    pred = np.asarray(pred, dtype=int)
    if labels.ndim != 1 or labels.shape != pred.shape:
        raise ValueError(f"labels and pred must be 1-D and of equal length; got {labels.shape} and {pred.shape}")
    if len(labels) == 0:
        raise ValueError("labels is empty: no samples to resample")
    if labels.min() < 0 or pred.min() < 0 or max(labels.max(), pred.max()) >= n_classes:
        raise ValueError(f"labels and pred must be class indices in 0..{n_classes - 1}")
    return labels, pred


def resample_weights(n: int, resamples: int, seed: int = 0, groups=None) -> np.ndarray:
    """How often each of `n` items appears in each of `resamples` bootstrap resamples: ``B x n``.

    Without `groups`, items are drawn one by one (``n`` draws with replacement). With `groups`
    (one label per item; any hashable values), the ``G`` distinct groups are drawn ``G`` times
    with replacement and every item counts as often as its group was drawn. Seeded: the same
    arguments give the same weights, and groups that are all singletons numbered ``0..n-1`` in
    item order give exactly the weights of drawing items one by one.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    item_group, g = group_index(n, groups)
    return rng.multinomial(g, np.full(g, 1.0 / g), size=resamples)[:, item_group]


def group_index(n: int, groups=None) -> tuple[np.ndarray, int]:
    """``(index, G)``: the group number ``0..G-1`` of each of `n` items, and the number of groups.

    `groups` gives one label per item (any hashable values); None makes every item its own
    group, numbered in item order.
    """
    if groups is None:
        return np.arange(n), n
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must give one group per item: expected {n}, got shape {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    return index, int(index.max()) + 1


def resampled_confusions(
    labels, pred, n_classes: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, groups=None
) -> np.ndarray:
    """Confusion matrices (rows = true class) of `resamples` bootstrap resamples: ``B x C x C``.

    With `groups` (the near-duplicate group of each image), whole groups are resampled.
    """
    labels, pred = _check(labels, pred, n_classes)
    n = len(labels)
    weights = resample_weights(n, resamples, seed, groups)  # B x N draw counts
    cells = np.zeros((n, n_classes * n_classes))
    cells[np.arange(n), labels * n_classes + pred] = 1.0
    return (weights @ cells).reshape(resamples, n_classes, n_classes)


def accuracy_of(confusions: np.ndarray) -> np.ndarray:
    """Accuracy of each confusion matrix in a ``... x C x C`` stack."""
    return np.trace(confusions, axis1=-2, axis2=-1) / confusions.sum(axis=(-2, -1))


def occurring_classes(labels, pred, n_classes: int) -> np.ndarray:
    """Boolean mask of the classes that occur among `labels` or `pred`: those macro-F1 averages.

    This is scikit-learn's convention when no class list is given. A folder of one class
    scored with a four-class model then has the F1 of that class (and of any class it is
    mistaken for), not that figure diluted by the classes nobody asked about.
    """
    present = np.zeros(n_classes, dtype=bool)
    present[np.asarray(labels, dtype=int)] = True
    present[np.asarray(pred, dtype=int)] = True
    return present


def macro_f1_of(confusions: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Macro-averaged F1 of each confusion matrix in a stack.

    `classes`, a boolean mask (`occurring_classes`), picks the classes averaged (default: all).
    A picked class with no true and no predicted samples in a matrix (a bootstrap resample
    that missed it) scores 0, as in scikit-learn with ``zero_division=0``, so that a resample
    agrees with `braintumor.evaluation.evaluator.classification_metrics`.
    """
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    fp = confusions.sum(axis=-2) - tp
    fn = confusions.sum(axis=-1) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)
    return f1.mean(axis=-1) if classes is None else f1[..., np.asarray(classes, dtype=bool)].mean(axis=-1)


def bootstrap_ci(
    labels,
    pred,
    n_classes: int,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    groups=None,
) -> dict[str, list[float]]:
    """Percentile bootstrap confidence intervals of accuracy and macro-F1.

    Parameters
    ----------
    labels, pred : array of int
        True and predicted class index of each test image.
    n_classes : int
        Number of classes. Macro-F1 averages those that occur among `labels` or `pred`
        (`occurring_classes`), the same set in every resample.
    level : float
        Coverage of the interval, in (0, 1).
    resamples : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling: the same inputs and seed give the same interval.
    groups : array, optional
        Near-duplicate group of each image (see `braintumor.data.duplicates.file_groups`). Given,
        whole groups are resampled, so copies count as the one test case they are; the
        interval is then wider on a test set with copies. None resamples single images.

    Returns
    -------
    dict
        ``{"accuracy": [low, high], "macro_f1": [low, high]}``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    confusions = resampled_confusions(labels, pred, n_classes, resamples, seed, groups)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {
        "accuracy": [float(v) for v in np.percentile(accuracy_of(confusions), tails)],
        "macro_f1": [float(v) for v in np.percentile(macro_f1_of(confusions, occurring_classes(labels, pred, n_classes)), tails)],
    }


def paired_difference(
    labels,
    pred_a,
    pred_b,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    groups=None,
) -> dict:
    """Is model B more accurate than model A on the same images? A paired comparison.

    Both models' predictions are resampled together (the same images in every resample), so
    what varies is only which images are drawn, not how the two models differ on them. With
    `groups`, whole near-duplicate groups are resampled, as in `bootstrap_ci`.

    Parameters
    ----------
    labels, pred_a, pred_b : array of int
        True class of each image and the two models' predicted classes.
    level, resamples, seed, groups
        As in `bootstrap_ci`.

    Returns
    -------
    dict
        ``difference`` (accuracy of B minus accuracy of A), ``difference_ci`` (percentile
        bootstrap ``[low, high]``), ``only_a_right`` and ``only_b_right`` (the discordant images)
        and ``mcnemar_p``: the two-sided exact McNemar p-value, which counts every image as an
        independent case (too small when the discordant images include copies; the interval
        with `groups` does not have that flaw).
    """
    from scipy.stats import binomtest

    labels = np.asarray(labels, dtype=int)
    n_classes = int(max(np.max(labels, initial=0), np.max(pred_a, initial=0), np.max(pred_b, initial=0))) + 1
    labels, pred_a = _check(labels, pred_a, n_classes)
    labels, pred_b = _check(labels, pred_b, n_classes)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    right_a, right_b = pred_a == labels, pred_b == labels
    weights = resample_weights(len(labels), resamples, seed, groups)
    differences = weights @ (right_b.astype(float) - right_a) / weights.sum(axis=1)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {
        "difference": float(right_b.mean() - right_a.mean()),
        "difference_ci": [float(v) for v in np.percentile(differences, tails)],
        "only_a_right": only_a,
        "only_b_right": only_b,
        "mcnemar_p": float(binomtest(only_b, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0,
    }


def one_vs_rest_auc(labels, probs: np.ndarray) -> list[float | None]:
    """ROC-AUC of each class against all others, from the predicted probability of that class.

    A class that is absent from `labels`, or is the only class present, has no ROC curve: None.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    out: list[float | None] = []
    for k in range(probs.shape[1]):
        positive = labels == k
        if positive.all() or not positive.any():
            out.append(None)
        else:
            out.append(float(roc_auc_score(positive, probs[:, k])))
    return out
