"""Cross-validation: train and evaluate one configuration on K group-aware folds, and report the
mean and standard deviation of every metric over the folds, and the metrics of the K test folds
pooled (every image tested once, by a model that did not train on it).

Each fold is an ordinary run directory (``OUT/fold1`` … ``OUT/foldK``) with its own checkpoint
and report; ``OUT/crossval.json`` and ``OUT/crossval.md`` hold the summary, with the pooled
confusion matrix and reliability diagram as PNG. Under ``dedup`` no near-duplicate group is ever
split between a fold's training and test parts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from braintumor.data.dataset import scan
from braintumor.errors import DataError
from braintumor.files import locked_folder, write_json, write_text
from braintumor.data.protocols import check_folds

HEADLINE = ("accuracy", "macro_f1", "macro_roc_auc", "ece", "ece_uncalibrated", "loss", "temperature")


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The numeric figures of an `evaluate` result, flat: the headline figures, then
    ``<class>/<precision|recall|f1|roc_auc>``. Missing values (a class without ROC-AUC) are NaN."""
    flat = {k: float(metrics[k]) if metrics.get(k) is not None else float("nan") for k in HEADLINE if k in metrics}
    for name, row in metrics.get("per_class", {}).items():
        for key in ("precision", "recall", "f1", "roc_auc"):
            value = row.get(key)
            flat[f"{name}/{key}"] = float(value) if value is not None else float("nan")
    return flat


def summarise_folds(fold_metrics: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof 1) of each figure over the folds, NaN ignored."""
    out = {}
    for key in fold_metrics[0]:
        values = np.array([m.get(key, np.nan) for m in fold_metrics], dtype=float)
        known = values[~np.isnan(values)]
        out[key] = {
            "mean": float(known.mean()) if len(known) else None,
            "std": float(known.std(ddof=1)) if len(known) > 1 else None,
            "folds": [None if np.isnan(v) else float(v) for v in values],
        }
    return out


def cross_validate(config) -> dict:
    """Train and evaluate `config` (a `TrainConfig` with ``folds >= 2``) on every fold.

    Returns
    -------
    dict
        protocol, folds, seed, runs (run folder of each fold), metrics {figure: {mean, std,
        folds}} and report (path of crossval.md).

    Raises
    ------
    DataError
        When the protocol is ``official``, or a class has fewer groups of images than folds;
        checked before any training starts.
    """
    from braintumor.training.trainer import train

    if config.protocol == "official":
        raise DataError("cross-validation needs a pooled protocol, not official", "use --protocol dedup or original with --folds")
    dataset = scan(config.data, config.class_map)
    groups = np.arange(len(dataset))
    if config.protocol == "dedup":
        from braintumor.data.duplicates import duplicate_groups

        groups = duplicate_groups(dataset, progress=config.progress)
    check_folds(dataset, groups, config.folds)

    # The cross-validation's folder is locked while it runs, each fold's run folder by its `train` too.
    with locked_folder(config.out) as out:
        runs = [str(train(replace(config, fold=fold, out=str(out / f"fold{fold + 1}")))) for fold in range(config.folds)]
        per_fold, pooled = score_folds(runs, config.data, progress=config.progress)
        result = {
            "protocol": config.protocol,
            "folds": config.folds,
            "seed": config.seed,
            "runs": runs,
            "metrics": summarise_folds([scalar_metrics(m) for m in per_fold]),
            "pooled": pooled,
        }
        result["report"] = str(write_crossval(result, out))
    return result


def score_folds(runs: list[str], data=None, progress: bool = True) -> tuple[list[dict], dict]:
    """Evaluate each fold's run on its test fold, as `braintumor.evaluation.evaluator.evaluate` does (its
    report written into the run folder), and pool the test folds into one test set: each fold's
    images scored by its own model, temperature and test-time view.

    Returns ``(per_fold, pooled)``: the metrics of each fold, and
    `braintumor.evaluation.evaluator.classification_metrics` of the pooled predictions. With folds that
    cover the dataset, every image is tested exactly once, so the intervals are narrower than
    one fold's and the ECE is less biased by the number of images. The pooled intervals
    resample near-duplicate groups of the pooled images, copies in different folds included.
    """
    from braintumor.data.duplicates import file_groups
    from braintumor.evaluation.evaluator import classification_metrics, predict_test_split, report_predictions

    per_fold, probs, labels, paths = [], [], [], []
    for run in map(Path, runs):
        test = predict_test_split(run / "model.safetensors", data, progress=progress)
        per_fold.append(report_predictions(test, run))
        probs.append(test.probs)
        labels.append(test.labels)
        paths += test.paths
    groups = file_groups(paths, progress=progress)  # copies in different test folds are resampled together too
    return per_fold, classification_metrics(np.concatenate(labels), np.concatenate(probs), test.info.classes, groups)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def write_crossval(result: dict, out: Path) -> Path:
    """Write crossval.json and crossval.md (a table of mean ± std and each fold) into `out`."""
    write_json(out / "crossval.json", result)
    k = result["folds"]
    lines = [
        f"# Cross-validation: {k} folds, {result['protocol']} protocol, seed {result['seed']}",
        "",
        "Each fold's model is trained on the other folds (less a validation part) and tested on its fold; "
        + ("no group of near-duplicate images is split between them." if result["protocol"] == "dedup"
           else "under `original`, copies of an image can fall on both sides."),
        "Standard deviations are over folds (ddof 1).",
        "",
        "| metric | mean ± std | " + " | ".join(f"[fold {i + 1}]({Path(r).name}/report.md)" for i, r in enumerate(result["runs"])) + " |",
        "|---|---:|" + "---:|" * k,
    ]
    for name, row in result["metrics"].items():
        lines.append(f"| {name} | {_fmt(row['mean'])} ± {_fmt(row['std'])} | " + " | ".join(_fmt(v) for v in row["folds"]) + " |")
    pooled = result.get("pooled")
    if pooled:
        from braintumor.metrics.calibration import plot_reliability
        from braintumor.evaluation.evaluator import plot_confusion

        plot_confusion(np.asarray(pooled["confusion_matrix"]), list(pooled["per_class"]), out / "pooled_confusion_matrix.png",
                       title=f"Confusion matrix, {k} test folds pooled")
        plot_reliability(pooled["calibration_bins"], out / "pooled_reliability.png", title=f"Reliability, {k} test folds pooled")
        low, high = pooled["accuracy_ci"]
        floor = pooled["ece_if_calibrated"]
        lines += [
            "",
            f"## The {k} test folds pooled ({pooled['n']} images, each tested once)",
            "",
            f"Accuracy **{100 * pooled['accuracy']:.2f}%** ({pooled['correct']}/{pooled['n']}; 95% CI "
            f"{100 * low:.2f}–{100 * high:.2f}%), macro-F1 {pooled['macro_f1']:.4f}, macro ROC-AUC "
            f"{_fmt(pooled['macro_roc_auc'])}. ECE {pooled['ece']:.4f} (95% CI {pooled['ece_ci'][0]:.4f}–"
            f"{pooled['ece_ci'][1]:.4f}); a perfectly calibrated model with these confidences would measure "
            f"{floor['mean']:.4f} on average on these images, copies right or wrong together.",
            "",
            "![pooled confusion matrix](pooled_confusion_matrix.png) ![pooled reliability diagram](pooled_reliability.png)",
        ]
    return write_text(out / "crossval.md", "\n".join(lines) + "\n")
