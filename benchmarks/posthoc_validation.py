"""Post-hoc changes to finished runs, without retraining, on validation data only.

Two questions, on the runs' validation images with each checkpoint's test-time view:

- **Would another calibrator than one temperature meet ECE <= 0.03?** Each is fitted on half of
  the validation set's near-duplicate groups and scored (ECE and NLL) on the other half, both
  ways, over 20 random halvings (copies never straddle the halves): no calibration; temperature
  scaling (what training stores); temperature fitted with each group weighted as one image;
  temperature plus a bias per class; vector scaling (a scale and a bias per class). Beside them,
  the ECE that a perfectly calibrated model with the temperature's confidences would measure on
  the same halves (`braintumor.metrics.calibration.ece_if_calibrated`, copies right or wrong together).
- **Does a nearest-neighbour vote on the penultimate features add to the classifier?** The
  cosine similarities of a validation image to the run's training images, the ``k`` nearest
  voting with weights ``exp(similarity / 0.05)``, blended with the calibrated softmax as
  ``(1 - w) * softmax + w * vote``; right answers for a grid of ``k`` and ``w``.

Usage: python benchmarks/posthoc_validation.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/posthoc_validation.json (or NAME).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, run_and_split, runs_parser, write  # noqa: E402

from braintumor.model.factory import to_float  # noqa: E402
from braintumor.metrics.calibration import ece_if_calibrated, expected_calibration_error, fit_temperature  # noqa: E402

HALVINGS = 20
NEIGHBOURS = (1, 5, 10, 20, 50)
WEIGHTS = (0.25, 0.5, 0.75, 1.0)
VOTE_TEMPERATURE = 0.05


@torch.inference_mode()
def features_and_logits(model, view, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits, each the mean over the image and its test-time view."""
    head = model.net.get_classifier()
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]))
        f = (model.features(x) + model.features(view.apply(x))) / 2  # the head is linear: its logits are the mean too
        features.append(f.float().numpy())
        logits.append(head(f).float().numpy())
    return np.concatenate(features), np.concatenate(logits)


def _nll(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    log_p = log_softmax(logits, axis=1)[np.arange(len(labels)), labels]
    return float(-np.average(log_p, weights=weights))


def _group_weights(groups: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def _fit_affine(logits: np.ndarray, labels: np.ndarray, per_class_scale: bool, ridge: float = 1e-2):
    """Logits -> logits * scale + bias, minimising NLL plus a small ridge on log-scale and bias."""
    classes = logits.shape[1]
    t0 = fit_temperature(logits, labels)
    n_scale = classes if per_class_scale else 1

    def loss(p):
        z = logits * np.exp(p[:n_scale]) / t0 + p[n_scale:]
        return _nll(z, labels) + ridge * float(p @ p)

    p = minimize(loss, np.zeros(n_scale + classes), method="L-BFGS-B").x
    return lambda z: z * np.exp(p[:n_scale]) / t0 + p[n_scale:]


def _weighted_temperature(logits, labels, groups):
    weights = _group_weights(groups)
    result = minimize(lambda log_t: _nll(logits / np.exp(log_t[0]), labels, weights), [0.0])
    return lambda z, t=float(np.exp(result.x[0])): z / t


CALIBRATORS = {
    "none": lambda logits, labels, groups: (lambda z: z),
    "temperature": lambda logits, labels, groups: (lambda z, t=fit_temperature(logits, labels): z / t),
    "temperature_groups_weighted": _weighted_temperature,
    "temperature_and_bias": lambda logits, labels, groups: _fit_affine(logits, labels, per_class_scale=False),
    "vector_scaling": lambda logits, labels, groups: _fit_affine(logits, labels, per_class_scale=True),
}


def calibrators_cross_fitted(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    scores = {name: {"ece": [], "nll": []} for name in CALIBRATORS}
    floor = []  # the ECE a calibrated model with the temperature's confidences would measure there
    unique = np.unique(groups)
    for _ in range(HALVINGS):
        first = np.isin(groups, rng.permutation(unique)[: len(unique) // 2])
        halves = np.flatnonzero(first), np.flatnonzero(~first)
        for fit, held in (halves, halves[::-1]):
            for name, make in CALIBRATORS.items():
                z = make(logits[fit], labels[fit], groups[fit])(logits[held])
                scores[name]["ece"].append(expected_calibration_error(softmax(z, axis=1), labels[held]))
                scores[name]["nll"].append(_nll(z, labels[held]))
                if name == "temperature":
                    floor.append(ece_if_calibrated(softmax(z, axis=1), resamples=200, groups=groups[held])["mean"])
    out = {name: {k: round(float(np.mean(v)), 4) for k, v in s.items()} for name, s in scores.items()}
    out["temperature"]["ece_if_calibrated"] = round(float(np.mean(floor)), 4)
    return out


def neighbour_votes(train_features, train_labels, val_features, classes: int, k: int) -> np.ndarray:
    unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(val_features) @ unit(train_features).T
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    weight = np.exp(np.take_along_axis(similarity, nearest, axis=1) / VOTE_TEMPERATURE)
    votes = np.stack([(weight * (train_labels[nearest] == c)).sum(axis=1) for c in range(classes)], axis=1)
    return votes / votes.sum(axis=1, keepdims=True)


def main() -> None:
    args = runs_parser(__doc__, "posthoc_validation.json").parse_args()
    torch.set_num_threads(2)
    rows = []
    for run in map(Path, args.runs):
        model, info, images, found, split = run_and_split(run, args.data)
        model.eval()
        train_f, _ = features_and_logits(model, info.tta_view, images[split.train])
        val_f, val_logits = features_and_logits(model, info.tta_view, images[split.val])
        labels, groups = found.labels[split.val], split.groups[split.val]
        calibrated = softmax(val_logits / info.temperature, axis=1)
        knn = {}
        for k in NEIGHBOURS:
            votes = neighbour_votes(train_f, found.labels[split.train], val_f, calibrated.shape[1], k)
            for w in WEIGHTS:
                knn[f"k{k}_w{w}"] = int((((1 - w) * calibrated + w * votes).argmax(axis=1) == labels).sum())
        row = {"run": str(run), "protocol": info.train_config["protocol"], "seed": info.train_config["seed"],
               "val_n": int(len(labels)), "val_groups": int(len(np.unique(groups))),
               "classifier_right": int((val_logits.argmax(axis=1) == labels).sum()),
               "calibrators": calibrators_cross_fitted(val_logits, labels, groups), "neighbours_right": knn}
        rows.append(row)
        print(run, row["classifier_right"], max(knn.values()), flush=True)
    summary = {
        "val_n": sum(r["val_n"] for r in rows),
        "classifier_right": sum(r["classifier_right"] for r in rows),
        "neighbours_right": {key: sum(r["neighbours_right"][key] for r in rows) for key in rows[0]["neighbours_right"]},
        "calibrators_mean": {name: {m: round(float(np.mean([r["calibrators"][name][m] for r in rows])), 4)
                                    for m in rows[0]["calibrators"][name]} for name in CALIBRATORS},
    }
    print(summary)
    print(f"wrote {write(args.output, {'machine': machine(), 'summary': summary, 'runs': rows})}")


if __name__ == "__main__":
    main()
