"""Out-of-distribution detection: is an input like the brain MRI slices the model was trained on?

Method (Lee et al., 2018, "A simple unified framework for detecting out-of-distribution samples"):
features of the training images are modelled as one Gaussian per class with a shared covariance
(Ledoit-Wolf shrinkage); an input's score is its Mahalanobis distance to the nearest class mean.

The features are the spatial means of the backbone's last stage at stride 16 (EfficientNet-Lite0's
``blocks.4``, 112 channels; the layer Grad-CAM reads too), not the penultimate features. Lee et
al. found intermediate layers better at telling inputs apart by their low-level make-up, and so
did we: on the 4-class Lite0 model (160 px) the AUROC between its test split and
`oodset` was 0.96 with penultimate features, of which only a third were rejected at the
threshold, and 1.0 with the stride-16 stage, all rejected, the closest at 1.4 x the threshold
(``benchmarks/ood.py``). The energy score and the maximum softmax probability reached 0.93-0.94.

The threshold is the `accept` quantile of the scores of the validation images (never the test
images), so that share of in-distribution images is accepted. Everything is stored in the
checkpoint: the threshold in ``info.extra["ood"]``, the whitening matrix and the whitened class
means as tensors in the safetensors file (``info.arrays``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from braintumor.distributed import map_shards
from braintumor.model.factory import to_float
from braintumor.errors import BrainTumorError, DataError
from braintumor.files import locked_folder
from braintumor.options import OOD_ACCEPT, OOD_VARIANTS

# The share of validation images the threshold accepts, and the intensity-remapped copies of each
# training image fitted on besides it (`sequence_variants`; 0: the training images alone). Declared
# in `braintumor.options`, where the command line reads them without importing torch.
DEFAULT_ACCEPT, DEFAULT_VARIANTS = OOD_ACCEPT, OOD_VARIANTS
FEATURE_STRIDE = 16


def forward_with_ood_features(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of a `Classifier` over ``N x 3 x S x S`` floats in [0, 1]: its logits and the
    detector's features (``N x C``: the spatial mean of the last stage at stride 16)."""
    net = model.net
    stages = [i for i, info in enumerate(net.feature_info) if info["reduction"] == FEATURE_STRIDE]
    if not stages:
        raise BrainTumorError(f"backbone {type(net).__name__} has no stage at stride {FEATURE_STRIDE}", "use a CNN backbone")
    final, (stage,) = net.forward_intermediates((x - model.mean) / model.std, indices=[stages[-1]])
    return net.forward_head(final), stage.mean(dim=(2, 3))


def sequence_variants(images: np.ndarray, copies: int = 1, seed: int = 0, knots: int = 4,
                      background: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Copies of preprocessed slices as other MRI sequences might show them: each copy's head
    passed through its own random intensity curve, the background left black.

    A sequence decides which tissue is bright: cerebrospinal fluid is dark on T1, bright on T2,
    dark again on FLAIR while oedema stays bright. A piecewise-linear curve through `knots` inner
    points of independent random height (not sorted: it may fall as well as rise) maps a slice's
    grey levels to another such contrast, its anatomy unchanged. A detector fitted on these too
    accepts slices of sequences the training collections lack, while a photograph or a chest
    X-ray, whose layout no remapping of grey levels makes a head's, stays far.

    Parameters
    ----------
    images : numpy.ndarray
        ``N x S x S x 3`` uint8, preprocessed.
    copies : int
        Copies of each image.
    seed : int
        Seed of the curves.

    Returns
    -------
    variants : numpy.ndarray
        ``(copies * N) x S x S x 3`` uint8, grey.
    rows : numpy.ndarray
        The image each variant was made from.
    """
    rng = np.random.default_rng(seed)
    rows = np.tile(np.arange(len(images)), copies)
    out = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    grid = np.linspace(0.0, 1.0, knots + 2)
    for k, row in enumerate(rows):
        gray = images[row].mean(axis=2) / 255.0
        heights = np.r_[rng.uniform(0.0, 0.3), rng.uniform(0.0, 1.0, knots), rng.uniform(0.5, 1.0)]
        mapped = np.interp(gray, grid, heights)
        mapped = np.where(gray > background, np.maximum(mapped, background), gray)  # the head stays above the background
        out[k] = np.round(mapped * 255).astype(np.uint8)[:, :, None]
    return out, rows


@torch.inference_mode()
def ood_features(model, images: np.ndarray, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The detector's features (``N x C`` float32) of preprocessed ``N x S x S x 3`` uint8 images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="features", unit="batch", disable=not progress or len(starts) < 2, leave=False):
            x = to_float(torch.from_numpy(np.require(images[start : start + batch_size], requirements=["C", "W"])).to(device))
            out.append(forward_with_ood_features(model, x)[1].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    try:
        return map_shards(features, images)  # in a data-parallel job, each rank computes its share
    finally:
        model.train(was_training)


class MahalanobisScorer(nn.Module):
    """Features ``N x D`` → distance to the nearest class mean in whitened space, ``N``.

    A plain module so that the same computation runs in PyTorch and inside the ONNX graph.
    """

    def __init__(self, whiten: torch.Tensor, means: torch.Tensor):
        super().__init__()
        self.register_buffer("whiten", whiten.float())
        self.register_buffer("means", means.float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = features.float() @ self.whiten
        squared = ((z[:, None, :] - self.means[None, :, :]) ** 2).sum(dim=2)
        return squared.min(dim=1).values.sqrt()


@dataclass
class OODStats:
    """A fitted detector.

    Attributes
    ----------
    whiten : numpy.ndarray
        ``D x D``; ``(f - mean) @ whiten`` has identity covariance.
    means : numpy.ndarray
        ``C x D`` class means of the training features, already multiplied by `whiten`.
    threshold : float
        Scores above it are rejected.
    accept : float
        The validation quantile the threshold was set at.
    val_accepted : float
        Share of validation images accepted (at least `accept`).
    """

    whiten: np.ndarray
    means: np.ndarray
    threshold: float
    accept: float = DEFAULT_ACCEPT
    val_accepted: float = float("nan")
    variants: int = 0

    def scorer(self) -> MahalanobisScorer:
        return MahalanobisScorer(torch.from_numpy(self.whiten), torch.from_numpy(self.means))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of ``N x D`` features (higher = less like the training data)."""
        with torch.no_grad():
            return self.scorer()(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy().astype(np.float64)

    def save_to(self, info) -> None:
        """Store the detector in a `ModelInfo` (saved with the checkpoint)."""
        info.extra["ood"] = {
            "method": "mahalanobis-tied-covariance",
            "features": f"spatial mean of the last stage at stride {FEATURE_STRIDE}",
            "threshold": float(self.threshold),
            "accept": float(self.accept),
            "val_accepted": float(self.val_accepted),
            "feature_dim": int(self.whiten.shape[0]),
            "sequence_variants": int(self.variants),
        }
        info.arrays["ood.whiten"] = torch.from_numpy(np.ascontiguousarray(self.whiten, dtype=np.float32))
        info.arrays["ood.means"] = torch.from_numpy(np.ascontiguousarray(self.means, dtype=np.float32))

    @classmethod
    def load_from(cls, info) -> "OODStats | None":
        """The detector stored in a `ModelInfo`, or None for a model fitted without one."""
        meta = info.extra.get("ood")
        if not meta or "ood.whiten" not in info.arrays or "ood.means" not in info.arrays:
            return None
        expected = f"spatial mean of the last stage at stride {FEATURE_STRIDE}"
        if meta.get("features") != expected:
            from braintumor.errors import CheckpointError

            raise CheckpointError(
                f"the checkpoint's out-of-distribution detector was fitted on other features ({meta.get('features')!r}); "
                f"this version uses {expected!r}",
                "refit it with `braintumor fit-ood MODEL.safetensors`",
            )
        return cls(
            whiten=info.arrays["ood.whiten"].float().numpy(),
            means=info.arrays["ood.means"].float().numpy(),
            threshold=float(meta["threshold"]),
            accept=float(meta.get("accept", 0.99)),  # (the default when checkpoints did not record it)
            val_accepted=float(meta.get("val_accepted", float("nan"))),
            variants=int(meta.get("sequence_variants", 0)),
        )


def fit_ood(
    train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray, accept: float = DEFAULT_ACCEPT
) -> OODStats:
    """Fit class means and a shared covariance on training features; threshold on validation.

    Parameters
    ----------
    train_features : numpy.ndarray
        ``N x D`` features (`ood_features`) of the training images.
    train_labels : numpy.ndarray
        ``N`` integer class labels.
    val_features : numpy.ndarray
        ``M x D`` features of in-distribution validation images.
    accept : float
        Share of validation images to accept, in ``(0.5, 1]``.
    """
    from sklearn.covariance import LedoitWolf

    train_features = np.asarray(train_features, dtype=np.float64)
    train_labels = np.asarray(train_labels)
    if not 0.5 < accept <= 1.0:
        raise BrainTumorError(f"accept must be in (0.5, 1], got {accept}")
    if train_features.ndim != 2 or len(train_features) != len(train_labels) or len(train_features) < 2:
        raise BrainTumorError(
            f"train_features must be N x D with N = len(train_labels) >= 2; got {train_features.shape} "
            f"for {len(train_labels)} labels"
        )
    if len(val_features) == 0:
        raise BrainTumorError("val_features is empty: the threshold needs validation images")
    classes = np.unique(train_labels)
    means = np.stack([train_features[train_labels == c].mean(axis=0) for c in classes])
    centered = train_features - means[np.searchsorted(classes, train_labels)]
    covariance = LedoitWolf(assume_centered=True).fit(centered).covariance_
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 1e-9 * eigenvalues.max())
    whiten = eigenvectors / np.sqrt(eigenvalues)
    stats = OODStats(whiten.astype(np.float32), (means @ whiten).astype(np.float32), threshold=float("inf"), accept=accept)
    val_scores = stats.scores(val_features)
    stats.threshold = threshold_at(val_scores, accept)
    stats.val_accepted = float((val_scores <= stats.threshold).mean())
    return stats


def threshold_at(scores: np.ndarray, accept: float) -> float:
    """The rejection threshold for in-distribution `scores`: their `accept` quantile, moved
    halfway to the next larger score (up by a thousandth when there is none).

    Every threshold in that gap accepts the same images, and its middle keeps an image that
    scores exactly at the quantile accepted when another runtime (onnxruntime, int8) computes
    its score a rounding error higher. Copies of one image score alike, so a group of them can
    sit at the quantile together: one `dedup` validation set had four.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    at = float(np.quantile(scores, accept, method="higher"))
    above = scores[scores > at]
    return (at + float(above[0])) / 2 if len(above) else at + 1e-3 * abs(at) + 1e-6


def fit_model_ood(model, info, train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                  accept: float = DEFAULT_ACCEPT, progress: bool = False, variants: int = DEFAULT_VARIANTS):
    """Fit the detector for `model` on preprocessed images and store it in `info` (returned):
    the class Gaussians on the training images and `variants` intensity-remapped copies of each
    (`sequence_variants`), the threshold on the validation images as they are.

    This is the one call the training run's finalise step makes.
    """
    train_labels = np.asarray(train_labels)
    train_features = ood_features(model, train_images, progress=progress)
    if variants:
        copies, rows = sequence_variants(train_images, variants)
        train_features = np.concatenate([train_features, ood_features(model, copies, progress=progress)])
        train_labels = np.concatenate([train_labels, train_labels[rows]])
    val_features = ood_features(model, val_images, progress=progress)
    stats = fit_ood(train_features, train_labels, val_features, accept)
    stats.variants = variants
    stats.save_to(info)
    return info


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling out-of-distribution (high score) from in-distribution."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def run_parts(checkpoint: str | Path, info, data: str | Path | None = None, progress: bool = True):
    """The decoded images of a training run and its split: from ``split.json`` beside
    `checkpoint`, else re-created from the checkpoint's training config
    (`braintumor.data.protocols.load_run`, which checks the data's fingerprint).

    Returns
    -------
    images : numpy.ndarray
        ``N x S x S x 3`` uint8, preprocessed with ``info.preprocess`` (cached on disk).
    labels : numpy.ndarray
    parts : dict
        ``{"train": rows, "val": rows, "test": rows}`` into `images`.
    """
    from braintumor.data.dataset import load_images, scan
    from braintumor.data.protocols import load_run, recorded_parts, run_labels

    checkpoint = Path(checkpoint)
    split_file = checkpoint.parent / "split.json"
    if not split_file.is_file():
        images, dataset, split = load_run(checkpoint, info, data, progress)
        return images, run_labels(dataset, info.train_config, np.r_[split.train, split.val]), {
            "train": split.train, "val": split.val, "test": split.test}
    split = json.loads(split_file.read_text())
    recorded = info.train_config.get("data", ".")
    dataset = scan(data if data else recorded, info.train_config.get("class_map") or None)
    images, dataset = load_images(dataset, info.preprocess, progress=progress)
    parts = recorded_parts(split, recorded, dataset)
    if len(parts["train"]) < 2 or len(parts["val"]) == 0:
        raise DataError(
            f"only {len(parts['train'])} training and {len(parts['val'])} validation images of {split_file} found "
            f"under {dataset.root}",
            "pass --data with the dataset the model was trained on",
        )
    return images, run_labels(dataset, info.train_config, np.r_[parts["train"], parts["val"]]), parts


def fit_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    accept: float = DEFAULT_ACCEPT,
    progress: bool = True,
    variants: int = DEFAULT_VARIANTS,
) -> dict:
    """Fit the detector of an existing checkpoint on the split it was trained with.

    The training and validation files are read from ``split.json`` beside the checkpoint
    (written by ``braintumor train``), or the split is re-created from the checkpoint's config;
    the test files are never used.

    Parameters
    ----------
    checkpoint : path
        A ``.safetensors`` checkpoint.
    data : path, optional
        Where the dataset is now, if it moved since training.
    out : path, optional
        Where to write the updated checkpoint (default: overwrite `checkpoint`).
    accept : float
        Share of validation images to accept.
    variants : int
        Intensity-remapped copies of each training image fitted on too (`sequence_variants`).

    Returns
    -------
    dict
        The stored ``info.extra["ood"]`` (threshold, validation acceptance, ...).
    """
    from braintumor.model.checkpoint import load_checkpoint, save_checkpoint

    out = Path(out) if out else Path(checkpoint)
    # Not while a training writes the run (its split.json and checkpoints): its folder is locked then.
    with locked_folder(Path(checkpoint).parent, existing_only=True), locked_folder(out.parent, existing_only=True):
        model, info = load_checkpoint(checkpoint)
        images, labels, parts = run_parts(checkpoint, info, data, progress)
        train, val = parts["train"], parts["val"]
        fit_model_ood(model, info, images[train], labels[train], images[val], accept, progress, variants)
        save_checkpoint(out, model, info)
    return info.extra["ood"]
