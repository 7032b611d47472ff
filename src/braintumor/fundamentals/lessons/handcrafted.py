"""Computer vision before deep learning: hand-crafted features and a linear classifier.

- **HOG** (histogram of oriented gradients, Dalal & Triggs 2005): in each 8 x 8 cell, a
  histogram of edge directions weighted by edge strength, normalised over 2 x 2 blocks of
  cells. It describes shape: where the edges are and which way they run.
- **LBP** (local binary patterns, Ojala et al. 2002): each pixel's 8 neighbours, each above or
  below it, give an 8-bit code; the "uniform" codes (edges, corners, flat spots) are counted in
  a 4 x 4 grid of regions. It describes texture.

The two feature vectors are concatenated, standardised, and fed to a multinomial logistic
regression, a linear classifier. Its regularization strength C is chosen on the validation
split; the test split is scored once, under the same ``original`` protocol as the CNNs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from braintumor.data.classes import CLASSES
from .mri_data import MRIData, load_mri

C_GRID = (0.003, 0.01, 0.03, 0.1)


def hog_features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    return hog(image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)


def lbp_features(image: np.ndarray, grid: int = 4) -> np.ndarray:
    """Histograms of uniform LBP codes (P = 8, R = 1) in a `grid` x `grid` layout of regions."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern((image * 255).astype(np.uint8), P=8, R=1, method="uniform")  # values 0..9
    side = image.shape[0] // grid
    hists = [np.bincount(codes[i * side : (i + 1) * side, j * side : (j + 1) * side].astype(int).ravel(), minlength=10) / side**2
             for i in range(grid) for j in range(grid)]
    return np.concatenate(hists)


def features(images: np.ndarray) -> np.ndarray:
    """HOG + LBP of each N x S x S gray image in [0, 1]."""
    return np.stack([np.concatenate([hog_features(im), lbp_features(im)]) for im in images])


def fit_and_score(mri: MRIData, c_grid=C_GRID) -> dict:
    """Choose C on validation, score the test split once; returns metrics and timings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from braintumor.evaluation.evaluator import classification_metrics

    start = time.perf_counter()
    feats = features(mri.images)
    feature_seconds = time.perf_counter() - start
    split, labels = mri.split, mri.labels
    scaler = StandardScaler().fit(feats[split.train])
    scaled = scaler.transform(feats).astype(np.float64)
    val_scores, models = {}, {}
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000).fit(scaled[split.train], labels[split.train])
        val_scores[c] = float((model.predict(scaled[split.val]) == labels[split.val]).mean())
        models[c] = model
    best_c = max(c_grid, key=lambda c: (val_scores[c], -c))
    # scikit-learn's predict_proba only has columns for classes seen in training
    probs = np.zeros((len(split.test), len(CLASSES)))
    probs[:, models[best_c].classes_] = models[best_c].predict_proba(scaled[split.test])
    metrics = classification_metrics(labels[split.test], probs, list(CLASSES))
    return {
        "n_features": int(feats.shape[1]),
        "val_accuracy_by_C": {str(c): v for c, v in val_scores.items()},
        "chosen_C": best_c,
        "test": metrics,
        "seconds": time.perf_counter() - start,
        "feature_seconds": feature_seconds,
    }


def run(quick: bool = False, data: str | Path | None = None, seed: int = 0, image_size: int = 64, progress: bool = False, **_) -> tuple[dict, object]:
    from skimage.feature import hog, local_binary_pattern

    from .common import figure

    mri = load_mri(data, image_size, seed=seed, progress=progress)
    scores = fit_and_score(mri, C_GRID[1:3] if quick else C_GRID)
    test = scores["test"]

    fig, axes = figure(4, size=(3.2, 3.2))
    example = mri.images[mri.split.test[0]]
    _, hog_image = hog(example, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), visualize=True)
    panels = (("test image", example), ("HOG cells", hog_image),
              ("LBP codes", local_binary_pattern((example * 255).astype(np.uint8), 8, 1, "uniform")))
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(m, cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    cm = np.asarray(test["confusion_matrix"])
    axes[3].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        axes[3].text(j, i, str(v), ha="center", va="center", fontsize=8)
    axes[3].set_xticks(range(len(CLASSES)), CLASSES, rotation=30, fontsize=7)
    axes[3].set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
    axes[3].set_title(f"test accuracy {100 * test['accuracy']:.1f}%")

    result = {
        "protocol": "original",
        "seed": seed,
        "image_size": image_size,
        "split_sizes": mri.split.sizes(),
        **scores,
        "finding": (
            f"HOG + LBP ({scores['n_features']} features) with logistic regression (C = {scores['chosen_C']}, chosen on validation) "
            f"scores {100 * test['accuracy']:.1f}% test accuracy, macro-F1 {test['macro_f1']:.3f}, "
            f"on the original protocol ({test['n']} test images)"
        ),
    }
    return result, fig
