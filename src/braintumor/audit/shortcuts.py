"""Can a dataset's classes be told apart without looking at the anatomy?

Public MRI datasets are often put together from several sources, one class from one hospital or
website and another from a second. Then the image's width, height and compression tell its class
apart as well as the tumour does, and a network may learn the source instead of the disease: its
accuracy holds on a random split of the same data and falls on images from elsewhere.

`shortcut_check` measures this with a small decision tree that sees only three numbers per file
(width, height, file bytes per pixel), cross-validated so that near-duplicate groups never
straddle a fold. An accuracy far above the majority-class share means the file's format alone
carries the label. On the Sartaj data every Training-folder glioma is 512 x 512 and most
no-tumour images are smaller, from other sources.
"""

from __future__ import annotations

import numpy as np

from braintumor.data.duplicates import ImageHashes

FEATURES = ("width", "height", "bytes per pixel")
DEFAULT_DEPTH = 3


def file_features(hashes: ImageHashes) -> np.ndarray:
    """``N x 3`` array of width, height and file bytes per pixel; NaN rows for unreadable files.

    The figures come from `braintumor.data.duplicates.hash_files` (or the cached `hash_dataset`),
    which records them as it decodes each file, so no file is read twice.
    """
    width, height, nbytes = np.asarray(hashes.sizes, dtype=float).T
    out = np.column_stack([width, height, nbytes / np.maximum(width * height, 1)])
    out[~hashes.readable] = np.nan  # an unreadable file: the audit reports it; here it is left out
    return out


def _folds(labels: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    """Folds possible when every fold must see every class: at most the smallest class's groups."""
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    return min(wanted, min(per_class))


def shortcut_check(
    features: np.ndarray,
    labels,
    groups=None,
    classes: tuple[str, ...] | None = None,
    folds: int = 5,
    depth: int = DEFAULT_DEPTH,
    seed: int = 0,
) -> dict:
    """How well a shallow decision tree predicts the class from file features alone.

    Parameters
    ----------
    features : array of shape (n, f)
        One row per image (`file_features`); rows with NaN are left out.
    labels : array of int, shape (n,)
        Class index of each image.
    groups : array of int, shape (n,), optional
        Near-duplicate group of each image; a group is never split between training and
        scoring folds. Default: every image its own group.
    classes : tuple of str, optional
        Class names, for the per-class recall.
    folds : int
        Cross-validation folds wanted; fewer are used when a class has fewer groups.
    depth : int
        Depth of the tree.

    Returns
    -------
    dict
        ``accuracy`` (pooled over the held-out folds), ``accuracy_std`` (across folds),
        ``majority`` (share of the largest class: what guessing it scores), ``recall`` per class,
        ``folds``, ``images``, ``features`` and ``rules`` (the tree fitted on all images, as
        text). When no fold split is possible (a class with fewer than two groups), ``skipped``
        says why and no accuracy is given.
    """
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.tree import DecisionTreeClassifier, export_text

    features = np.asarray(features, dtype=float)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be an (n, f) array with n = len(labels) = {len(labels)}, got {features.shape}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    keep = ~np.isnan(features).any(axis=1)
    x, y, g = features[keep], labels[keep], groups[keep]
    present = np.unique(y)
    result = {"features": list(FEATURES), "images": int(keep.sum()), "depth": depth}
    if len(present) < 2:
        return result | {"skipped": "fewer than two classes"}
    k = _folds(y, g, folds)
    if k < 2:
        return result | {"skipped": "a class has fewer than two near-duplicate groups, so no fold split is possible"}

    def tree():
        return DecisionTreeClassifier(max_depth=depth, min_samples_leaf=5, random_state=seed)

    predicted = np.empty_like(y)
    per_fold = []
    for train, test in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, g):
        predicted[test] = tree().fit(x[train], y[train]).predict(x[test])
        per_fold.append(float(np.mean(predicted[test] == y[test])))
    names = classes or tuple(str(c) for c in range(int(y.max()) + 1))
    recall = {names[c]: round(float(np.mean(predicted[y == c] == c)), 4) for c in present}
    full = tree().fit(x, y)
    rules = export_text(full, feature_names=list(FEATURES), class_names=[names[c] for c in full.classes_], decimals=3)
    return result | {
        "folds": k,
        "accuracy": round(float(np.mean(predicted == y)), 4),
        "accuracy_std": round(float(np.std(per_fold)), 4),
        "majority": round(float(np.bincount(y).max() / len(y)), 4),
        "recall": recall,
        "rules": rules,
    }
