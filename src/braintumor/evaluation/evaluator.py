"""Metrics and the run report: accuracy and macro-F1 with 95% bootstrap confidence intervals,
loss, per-class precision/recall/F1 and one-vs-rest ROC-AUC, calibration (ECE, reliability
diagram, the ECE's interval and the ECE a calibrated model would measure), confusion matrix
(JSON + PNG), training curves (PNG), skipped files, and ``report.md``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from braintumor.errors import BrainTumorError
from braintumor.files import locked_folder, write_json, write_text
from braintumor.metrics.figures import save_figure

if TYPE_CHECKING:
    from braintumor.model.checkpoint import ModelInfo


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str], groups=None) -> dict:
    """Metrics of predicted probabilities `probs` (``N x C``) against integer `labels`.

    Returns a JSON-ready dict: n, accuracy, loss (mean negative log-likelihood), macro_f1 (over
    the classes that occur among the labels or the predictions),
    per_class {class: precision, recall, f1, support, roc_auc}, confusion_matrix (rows = true
    class), accuracy_ci and macro_f1_ci (95% percentile bootstrap, 2,000 resamples, seed 0),
    macro_roc_auc (mean over the classes that have one), ece with ece_ci (95% bootstrap, 1,000
    resamples) and ece_if_calibrated (mean and 95th percentile of the ECE that a perfectly
    calibrated model with the same confidences would measure on these images), and
    calibration_bins (15 bins).

    `groups`, the near-duplicate group of each image, makes the bootstrap resample groups
    (copies together; see `braintumor.metrics.stats`) and the simulated calibrated model get copies
    right or wrong together; the dict then also holds ``ci_groups``, their number. Without it
    images count one by one, and ``ci_groups`` is None.
    """
    from braintumor.metrics.calibration import ece_if_calibrated, ece_interval, expected_calibration_error, reliability_bins
    from braintumor.metrics.stats import bootstrap_ci, occurring_classes, one_vs_rest_auc

    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be N x C with N = len(labels); got {probs.shape} for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no samples to evaluate")
    pred = probs.argmax(1)
    ks = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=ks, zero_division=0)
    cm = confusion_matrix(labels, pred, labels=ks)
    ci = bootstrap_ci(labels, pred, len(classes), groups=groups)
    auc = one_vs_rest_auc(labels, probs)
    known_auc = [a for a in auc if a is not None]
    return {
        "n": int(len(labels)),
        "correct": int((pred == labels).sum()),
        "accuracy": float((pred == labels).mean()),
        "loss": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()),
        "macro_f1": float(f1[occurring_classes(labels, pred, len(classes))].mean()),
        "accuracy_ci": ci["accuracy"],
        "macro_f1_ci": ci["macro_f1"],
        "ci_groups": None if groups is None else int(len(np.unique(groups))),
        "macro_roc_auc": float(np.mean(known_auc)) if known_auc else None,
        "ece": expected_calibration_error(probs, labels),
        "ece_ci": ece_interval(probs, labels, groups=groups),
        "ece_if_calibrated": ece_if_calibrated(probs, groups=groups),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i]),
                "roc_auc": auc[i]}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "calibration_bins": reliability_bins(probs, labels),
    }


def metrics_by_source(labels, probs, sources, classes: list[str], groups=None) -> dict:
    """Accuracy of each source folder's test images (``Training``, ``Testing``, ...).

    Sartaj's official Testing folder holds images from other sources than its Training folder
    (see `braintumor.audit.shortcuts`), and protocols that pool both mix them in one test set. Split
    by folder, a model's accuracy shows how well it does on each. Returns ``{folder: {n,
    correct, accuracy, accuracy_ci, recall}}`` (the interval as in `classification_metrics`,
    resampling `groups` together; recall per class present), or ``{}`` when all test images come
    from one folder.
    """
    from braintumor.metrics.stats import bootstrap_ci

    labels = np.asarray(labels, dtype=int)
    pred = np.asarray(probs).argmax(1)
    sources = np.asarray(sources, dtype=object)
    names = sorted(set(sources), key=lambda s: (s != "Training", s != "Testing", s))
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        at = sources == name
        y, p = labels[at], pred[at]
        ci = bootstrap_ci(y, p, len(classes), groups=None if groups is None else np.asarray(groups)[at])
        out[name or "(no folder)"] = {
            "n": int(at.sum()),
            "correct": int((y == p).sum()),
            "accuracy": float((y == p).mean()),
            "accuracy_ci": ci["accuracy"],
            "recall": {classes[c]: float((p[y == c] == c).mean()) for c in np.unique(y)},
        }
    return out


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "Confusion matrix") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train (augmented)")
    ax2.plot(epochs, [h["val_acc"] for h in history], "o-", label="validation")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _ci(interval: list[float] | None, percent: bool = False) -> str:
    if not interval:
        return ""
    lo, hi = interval
    return f" (95% CI {_pct(lo)}–{_pct(hi)})" if percent else f" (95% CI {lo:.4f}–{hi:.4f})"


def _auc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def write_report(
    out: Path,
    metrics: dict,
    classes: list[str],
    skipped: list[tuple[str, str]],
    history: list[dict] | None = None,
    title: str = "braintumor evaluation",
    context: dict | None = None,
) -> Path:
    """Write test_metrics.json, confusion_matrix.{json,png}, reliability.png, curves.png, skipped.json and
    report.md, each atomically, holding the lock of folder `out` (`braintumor.files`)."""
    with locked_folder(out) as out:
        return _write_report(out, metrics, classes, skipped, history, title, context)


def _write_report(out: Path, metrics: dict, classes: list[str], skipped: list[tuple[str, str]], history: list[dict] | None,
                  title: str, context: dict | None) -> Path:
    write_json(out / "test_metrics.json", {**(context or {}), **metrics})
    write_json(out / "confusion_matrix.json", {"classes": classes, "matrix": metrics["confusion_matrix"]})
    plot_confusion(np.asarray(metrics["confusion_matrix"]), classes, out / "confusion_matrix.png")
    write_json(out / "skipped.json", [{"path": p, "reason": r} for p, r in skipped])
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- **{key}**: {value}")
    lines += [
        "",
        f"**Test accuracy {_pct(metrics['accuracy'])}** ({metrics['correct']}/{metrics['n']})"
        f"{_ci(metrics.get('accuracy_ci'), percent=True)}, "
        f"macro-F1 {metrics['macro_f1']:.4f}{_ci(metrics.get('macro_f1_ci'))}, loss {metrics['loss']:.4f}.",
        "",
    ]
    if metrics.get("accuracy_ci"):
        unit = "images"
        if metrics.get("ci_groups") is not None:
            unit = (f"{metrics['ci_groups']} near-duplicate groups, copies drawn together since a model gets them "
                    f"right or wrong together")
        lines += [f"The 95% confidence intervals come from a percentile bootstrap of the test set's {unit} (2,000 "
                  "resamples): they cover the chance of testing on this sample of images, not the variation between "
                  "training runs or splits.", ""]
    if metrics.get("training_copies"):
        lines += _copies_lines(metrics["training_copies"], metrics.get("unseen"))
    if metrics.get("against"):
        lines += _against_lines(metrics["against"], metrics)
    if metrics.get("cross_collection"):
        lines += _cross_lines(metrics["cross_collection"])
    if metrics.get("by_collection"):
        lines += _source_lines(metrics["by_collection"], classes, _BY_COLLECTION)
    if metrics.get("by_source"):
        lines += _source_lines(metrics["by_source"], classes)
    lines += [
        "| class | precision | recall | F1 | ROC-AUC (one vs rest) | support |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(
            f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {_auc(m.get('roc_auc'))} | {m['support']} |"
        )
    lines += ["", "![confusion matrix](confusion_matrix.png) ([JSON](confusion_matrix.json))", ""]
    if metrics.get("calibration_bins"):
        from braintumor.metrics.calibration import plot_reliability

        plot_reliability(metrics["calibration_bins"], out / "reliability.png")
        lines += ["## Calibration", "", f"Expected calibration error (ECE, {len(metrics['calibration_bins'])} bins): "
                  f"**{metrics['ece']:.4f}**{_ci(metrics.get('ece_ci'))}."]
        if "temperature" in metrics:
            lines[-1] += (f" Temperature scaling (T = {metrics['temperature']:.3f}, fitted on the validation set) "
                          f"is applied; without it the ECE is {metrics['ece_uncalibrated']:.4f}.")
        if metrics.get("ece_if_calibrated"):
            floor = metrics["ece_if_calibrated"]
            lines[-1] += (f" ECE is biased upward on small test sets: a perfectly calibrated model with these "
                          f"confidences would measure {floor['mean']:.4f} on average on {metrics['n']} images "
                          f"(95% of the time below {floor['p95']:.4f})")
            if metrics.get("ci_groups") is not None:
                lines[-1] += f", getting the copies in each of the {metrics['ci_groups']} near-duplicate groups right or wrong together"
            lines[-1] += "."
        lines += ["", "![reliability diagram](reliability.png)", ""]
    if history:
        plot_curves(history, out / "curves.png")
        lines += ["## Training", "", "![training curves](curves.png) (per epoch: [metrics.jsonl](metrics.jsonl))", ""]
    lines += [f"## Skipped files: {len(skipped)}", ""]
    if skipped:
        lines += [f"- `{p}`: {r}" for p, r in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- … and {len(skipped) - 50} more, all in [skipped.json](skipped.json)")
    else:
        lines.append("None.")
    return write_text(out / "report.md", "\n".join(lines) + "\n")


@dataclass
class TestPredictions:
    """A checkpoint's predictions on a protocol's test split (see `predict_test_split`)."""

    probs: np.ndarray
    """``N x C`` calibrated probabilities (test-time view and temperature applied)."""
    labels: np.ndarray
    """True class index of each test image."""
    paths: list[Path]
    """The test images."""
    groups: np.ndarray | None
    """Near-duplicate group of each test image, among the test images (for the intervals);
    None when `predict_test_split` was asked not to hash them."""
    info: ModelInfo
    """The checkpoint's model info."""
    context: dict
    """A description of the split, for reports."""
    skipped: list
    """Unreadable files of the dataset, skipped: ``(path, reason)``."""
    sources: list[str] | None = None
    """Top-level folder (``Training``, ``Testing`` or ``""``) of each test image; with several
    collections, prefixed by the collection's name (``sartaj/Testing``)."""
    collections: list[str] | None = None
    """The collection of each test image when the data pools several (None for one)."""
    data: object = None
    """The data setting scored: a folder, or a list of collections' folders."""
    cross: dict | None = None
    """Under protocol ``cross``: `cross_collection_summary`."""
    members: list[str] = field(default_factory=list)
    """The other checkpoints averaged with the first into an ensemble (see `predict_test_split`)."""
    member_probs: list = field(default_factory=list)
    """Of an ensemble, each model's own calibrated probabilities (``N x C``), the first model's first."""
    overlap: dict | None = None
    """Test images the model trained or was validated on, scored all the same (``allow_overlap``):
    ``{"seen": k, "test_images": n, "example": path}``; None when the test split is held out."""


_BY_FOLDER = ("By source folder", "folder",
              "The test images come from more than one top-level folder of the dataset. Where the folders were "
              "collected from different sources, as Sartaj's Training and Testing folders were, a model can do much "
              "better on one than on the other:")
_BY_COLLECTION = ("By collection", "collection",
                  "The data pools several collections; the pooled figure above is the test images of all of them, "
                  "and each collection's own test images score:")


def _source_lines(by_source: dict, classes: list[str], words: tuple[str, str, str] = _BY_FOLDER) -> list[str]:
    title, column, text = words
    lines = [
        f"## {title}", "", text, "",
        f"| {column} | images | right | accuracy (95% CI) | " + " | ".join(f"{c} recall" for c in classes) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(classes),
    ]
    for name, m in by_source.items():
        recall = [f"{m['recall'][c]:.3f}" if c in m["recall"] else "–" for c in classes]
        lines.append(f"| {name} | {m['n']} | {m['correct']} | {_pct(m['accuracy'])}{_ci(m.get('accuracy_ci'), percent=True)} | "
                     + " | ".join(recall) + " |")
    return lines + [""]


def _copies_lines(copies: dict, unseen: dict | None) -> list[str]:
    """The report section of `braintumor.evaluation.external`'s check for copies of training images."""
    levels = copies["per_level"]
    lines = ["## Copies of the model's training images", "",
             f"{copies['with_a_copy']} of {copies['images']} images have a copy among the {copies['compared_with']:,} "
             f"images the model trained or was early-stopped on ({copies['train_data']}): {levels['byte']} "
             f"byte-identical, {levels['pixel']} pixel-identical, {levels['near']} near-duplicate; "
             f"{copies['label_conflicts']} of them filed there under another class. Figures on images with a copy "
             "measure memory, not generalisation. [training_copies.csv](training_copies.csv) lists them, each with the "
             "training image it copies (for a near-duplicate, the nearest of its group) and their hash distance in bits.", "",
             "| class | images | with a copy |", "|---|---:|---:|"]
    lines += [f"| {c} | {v['images']} | {v['with_a_copy']} |" for c, v in copies["per_class"].items()]
    if unseen:
        lines += ["", f"**On the {unseen['n']} images without a copy: accuracy {_pct(unseen['accuracy'])} "
                      f"({unseen['correct']}/{unseen['n']}){_ci(unseen.get('accuracy_ci'), percent=True)}, macro-F1 "
                      f"{unseen['macro_f1']:.4f}{_ci(unseen.get('macro_f1_ci'))}, ECE {unseen['ece']:.4f}.** "
                      "This is the figure that speaks for new images."]
    else:
        lines += ["", "**Every image has a copy among the training images: this folder says nothing about new images.**"]
    return lines + [""]


def _against_lines(against: dict, metrics: dict) -> list[str]:
    low, high = against["difference_ci"]
    unit = f"{metrics['ci_groups']} near-duplicate groups" if metrics.get("ci_groups") is not None else "images"
    verdict = ("The interval holds 0: this test set cannot tell the two models apart." if low <= 0 <= high else
               f"The interval excludes 0: this model is {'more' if low > 0 else 'less'} accurate on images like these.")
    return [
        f"## Against `{against['model']}`", "",
        f"On the same {metrics['n']} test images the other model scores {_pct(against['accuracy'])} "
        f"({against['correct']}/{metrics['n']}). This model minus the other: **{100 * against['difference']:+.2f} "
        f"points** (95% CI {100 * low:+.2f} to {100 * high:+.2f}, paired bootstrap of the test set's {unit}). Right "
        f"only here: {against['only_this_right']} images; only there: {against['only_other_right']}. McNemar's exact "
        f"p = {against['mcnemar_p']:.3g} (it counts every image as independent, copies too). {verdict}", "",
    ]


def paired_comparison(test: TestPredictions, other: TestPredictions, name: str) -> dict:
    """How `test`'s model compares with `other`'s on the same test images: a paired comparison.

    Returns a JSON-ready dict: model (`name`), the other model's accuracy and correct count,
    difference (this accuracy minus the other's) with difference_ci (95% paired bootstrap of
    the near-duplicate groups), only_this_right, only_other_right and mcnemar_p (see
    `braintumor.metrics.stats.paired_difference`). Raises `DataError` if the test images differ.
    """
    from braintumor.errors import DataError
    from braintumor.metrics.stats import paired_difference

    if other.info.classes != test.info.classes:
        raise DataError(
            f"{name} predicts other classes ({', '.join(other.info.classes)}) than the model it is compared with "
            f"({', '.join(test.info.classes)})",
            "compare checkpoints trained with the same classes",
        )
    if test.paths != other.paths or not np.array_equal(test.labels, other.labels):
        raise DataError(
            f"{name} was scored on other test images than the model it is compared with "
            f"({len(other.paths)} against {len(test.paths)}; protocol, seed, test fraction or fold differ)",
            "compare checkpoints trained on the same data with the same --protocol, --seed and test fraction",
        )
    pred, other_pred = test.probs.argmax(1), other.probs.argmax(1)
    d = paired_difference(test.labels, other_pred, pred, groups=test.groups)
    return {
        "model": str(name),
        "accuracy": float((other_pred == test.labels).mean()),
        "correct": int((other_pred == test.labels).sum()),
        "difference": d["difference"],
        "difference_ci": d["difference_ci"],
        "only_this_right": d["only_b_right"],
        "only_other_right": d["only_a_right"],
        "mcnemar_p": d["mcnemar_p"],
    }


def predict_test_split(
    checkpoint: str | Path,
    data: str | Path | None = None,
    protocol: str | None = None,
    seed: int | None = None,
    progress: bool = True,
    groups: bool = True,
    members: list | tuple = (),
    allow_overlap: bool = False,
    device: str | None = None,
) -> TestPredictions:
    """A checkpoint's calibrated probabilities on the test part of a protocol's split.

    Defaults for `data`, `protocol` and `seed` come from the checkpoint's training config (its
    cross-validation fold included), so the test split the run held out is re-created exactly.
    With `groups`, the test images are also hashed into near-duplicate groups (a few seconds),
    so that the report's intervals resample copies together. With `members`, more checkpoints
    of the same data and preprocessing: the probabilities are the mean over all of them (an
    ensemble), and a member whose own training or validation part holds a test image is refused
    (`check_ensemble_member`), so the ensemble's figure is as leak-free as the first model's.

    A split that is not the model's own (another `protocol` or `seed`) whose test part holds
    images the model trained or was validated on (`images_seen_in_training`) is refused: its
    score would not be a test. With `allow_overlap` it is scored all the same, and the result's
    ``overlap`` says how many of its images the model had seen.
    """
    from braintumor.model.checkpoint import load_checkpoint
    from braintumor.data.duplicates import file_groups
    from braintumor.inference.forward import predict_images
    from braintumor.inference.runtime import mean_probabilities
    from braintumor.data.protocols import load_run, run_fold

    checkpoint = Path(checkpoint)
    from braintumor.model.device import resolve_device

    place = resolve_device(device or "cpu")  # a GPU that is not there fails before any work
    model, info = load_checkpoint(checkpoint)
    model = model.to(place)
    cfg = info.train_config
    data = data or cfg.get("data") or "."
    protocol = protocol or cfg.get("protocol", "original")
    seed = cfg.get("seed", 0) if seed is None else seed
    images, dataset, split = load_run(checkpoint, info, data, progress, protocol, seed)
    folds, fold = run_fold(cfg, protocol)
    if len(split.test) == 0:
        from braintumor.errors import DataError

        raise DataError(f"the {protocol} protocol leaves no test images in {data}", "use more data or another protocol")
    overlap = check_held_out(checkpoint, info, dataset, split, protocol, seed, allow_overlap)
    probs = predict_images(model, images[split.test], tta=info.tta, temperature=info.temperature, tta_view=info.tta_view)
    every = [probs]  # each model's own, for an ensemble
    if members:
        for member in members:
            other, other_info = load_checkpoint(member)
            other = other.to(place)
            check_ensemble_member(member, other_info, info, dataset, split)
            every.append(predict_images(other, images[split.test], tta=other_info.tta, temperature=other_info.temperature,
                                        tta_view=other_info.tta_view))
        probs = mean_probabilities(every)
    context = {
        **model_context(checkpoint, info, data),
        "protocol": protocol,
        "split seed": seed,
        **({"training seed": cfg["train_seed"]} if cfg.get("train_seed") is not None else {}),
        **({"fold": f"{fold + 1} of {folds}"} if folds else {}),
        "split sizes": make_split_sizes(split),
        **({"excluded from training and validation": f"{len(cfg['exclude'])} listed images (split.json)"} if cfg.get("exclude") else {}),
        **({"labels corrected in training and validation": _relabel_text(dataset, cfg, split)} if cfg.get("relabel") else {}),
        **({"distilled from": ", ".join(cfg["teacher"])} if cfg.get("teacher") else {}),
        **({"ensemble": f"{len(members) + 1} models averaged: {checkpoint}, " + ", ".join(map(str, members))} if members else {}),
        "data fingerprint": info.data_fingerprint[:16] if info.data_fingerprint else "",
    }
    paths = [dataset.paths[i] for i in split.test]
    found = file_groups(paths, progress=progress) if groups else None
    several = len(dataset.collections) > 1
    collections = [dataset.collections[s] for s in dataset.sources[split.test]] if several else None
    sources = [dataset.splits[i] for i in split.test]
    if several:
        sources = [f"{c}/{s}" if s else c for c, s in zip(collections, sources)]
    cross = cross_collection_summary(dataset, split) if protocol == "cross" else None
    return TestPredictions(probs, dataset.labels[split.test], paths, found, info, context, dataset.skipped, sources,
                           collections=collections, members=[str(m) for m in members],
                           member_probs=every if members else [], overlap=overlap, data=data, cross=cross)


def images_seen_in_training(checkpoint, info: ModelInfo, dataset) -> np.ndarray | None:
    """Rows of `dataset` that the checkpoint's model was trained or validated (early-stopped) on.

    They come from the ``split.json`` of the checkpoint's run folder when it records the model's
    protocol and seed (matched by path under the data folder the run recorded), else from the
    model's split re-created from its training config, which needs the dataset it was trained on
    (the same fingerprint). None when neither is at hand.
    """
    from braintumor.data.protocols import recorded_parts, run_split

    cfg = info.train_config
    split_file = Path(checkpoint).parent / "split.json"
    recorded = None
    if split_file.is_file():
        try:
            recorded = json.loads(split_file.read_text())
        except (OSError, ValueError):
            recorded = None
    if (isinstance(recorded, dict) and recorded.get("protocol") == cfg.get("protocol", "original")
            and recorded.get("seed") == cfg.get("seed", 0) and cfg.get("data")):
        parts = recorded_parts(recorded, cfg["data"], dataset)
        return np.union1d(parts["train"], parts["val"])
    if info.data_fingerprint and dataset.fingerprint() != info.data_fingerprint:
        return None
    own = run_split(dataset, cfg)
    return np.union1d(own.train, own.val)


def check_held_out(checkpoint, info: ModelInfo, dataset, split, protocol: str, seed: int,
                   allow_overlap: bool = False) -> dict | None:
    """Refuse a test split that holds images the checkpoint's model trained or was validated on.

    The model's own split (its protocol and seed) holds its test images out by construction;
    another can overlap its training part (a random split of another seed, the Testing folder of
    a model trained under ``original``, ...), and a score there would not be a test.

    Returns
    -------
    dict or None
        None when no test image was seen; with `allow_overlap`, the overlap
        ``{"seen": k, "test_images": n, "example": path}``.

    Raises
    ------
    BrainTumorError
        When test images were seen and `allow_overlap` is not set.
    """
    cfg = info.train_config
    own_protocol, own_seed = cfg.get("protocol", "original"), cfg.get("seed", 0)
    if protocol == own_protocol and seed == own_seed:
        return None
    seen_rows = images_seen_in_training(checkpoint, info, dataset)
    if seen_rows is None:
        return None
    seen = np.intersect1d(split.test, seen_rows)
    if len(seen) == 0:
        return None
    overlap = {"seen": int(len(seen)), "test_images": int(len(split.test)), "example": str(dataset.paths[seen[0]])}
    if allow_overlap:
        return overlap
    raise BrainTumorError(
        f"{len(seen)} of the {len(split.test)} test images of the {protocol} split with seed {seed} are images "
        f"{checkpoint} was trained or validated on (e.g. {overlap['example']}), so its score there would not be a test",
        f"evaluate it on its own split (its protocol {own_protocol}, seed {own_seed}: leave out --protocol and --seed), "
        "or add --allow-overlap to score it anyway, the report then saying so in its first line",
    )


def model_context(checkpoint, info: ModelInfo, data) -> dict:
    """The first lines of a report's description: which model, scored on which data."""
    shown = ", ".join(map(str, data)) if isinstance(data, (list, tuple)) else str(data)
    return {"model": str(checkpoint), "backbone": info.backbone, "image size": info.preprocess.image_size,
            "data": shown}


def check_ensemble_member(member, member_info, info, dataset, split) -> None:
    """Raise a `BrainTumorError` unless checkpoint `member` can join the first model (`info`) on
    its test split: the same classes, preprocessing and data, and none of the test images in the
    member's own training or validation part (re-created from its config), which would make the
    ensemble's figure a leaking one."""
    from braintumor.model.checkpoint import check_same_inputs
    from braintumor.data.protocols import run_split

    check_same_inputs(member, member_info, "the first model", info)
    if member_info.data_fingerprint and info.data_fingerprint and member_info.data_fingerprint != info.data_fingerprint:
        raise BrainTumorError(f"{member} was trained on other data than the first model",
                              "ensemble runs of the same dataset")
    theirs = run_split(dataset, member_info.train_config)
    seen = np.intersect1d(np.r_[theirs.train, theirs.val], split.test)
    if len(seen):
        raise BrainTumorError(
            f"{member} trained or early-stopped on {len(seen)} of the {len(split.test)} test images, so the ensemble's "
            f"test figure would leak (e.g. {dataset.paths[seen[0]]})",
            "ensemble runs of the same --protocol and --seed (they may differ in --train-seed and recipe)")


def _relabel_text(dataset, cfg: dict, split) -> str:
    """How many corrected labels a run had, and how many of them the test part leaves uncorrected."""
    from braintumor.data.protocols import run_labels

    in_test = int((run_labels(dataset, cfg, split.test) != dataset.labels).sum())
    return (f"{len(cfg['relabel'])} listed images (split.json); the test part is scored against the folders' labels"
            + (f", {in_test} of its images among those corrected" if in_test else ""))


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    protocol: str | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    against: str | Path | None = None,
    members: list | tuple = (),
    allow_overlap: bool = False,
    device: str | None = None,
) -> dict:
    """Evaluate a checkpoint on the test part of a protocol's split and write a report.

    Defaults for `data`, `protocol` and `seed` come from the checkpoint's training config, so
    ``evaluate(run/model.safetensors)`` re-creates exactly the test split the run held out.
    With `against`, a second checkpoint is scored on the same test images and the report adds
    the paired comparison of the two (`paired_comparison`), under ``against`` in the metrics.
    With `members`, the checkpoint and these are scored as one ensemble (`predict_test_split`);
    its report needs its own `out`. Returns the metrics dict; the report goes to `out` (default:
    the checkpoint's folder), whose lock is held meanwhile (`braintumor.files.locked_folder`).

    A split other than the model's own whose test images the model (or `against`'s) trained
    or was validated on is refused, unless `allow_overlap` is set; the report's first line
    and the metrics' ``overlap`` then say so (`check_held_out`).
    """
    from braintumor.model.checkpoint import read_info

    if members and out is None:
        raise BrainTumorError("an ensemble's report needs its own folder (the first model's holds that model's report)",
                              "pass --out, e.g. --out runs/ensemble")
    for other in [*members, *([against] if against is not None else [])]:
        read_info(other)  # a missing or foreign file fails before any scoring
    with locked_folder(Path(out) if out else Path(checkpoint).parent) as folder:
        test = predict_test_split(checkpoint, data, protocol, seed, progress, members=members, allow_overlap=allow_overlap,
                                  device=device)
        comparison = None
        if against is not None:
            ctx = test.context
            # The same images, so the same groups: the first model's serve the comparison.
            other = predict_test_split(against, test.data, ctx["protocol"], ctx["split seed"], progress, groups=False,
                                       device=device,
                                       allow_overlap=allow_overlap)
            comparison = paired_comparison(test, other, str(against))
            if other.overlap:
                comparison["overlap"] = other.overlap
        return report_predictions(test, folder, against=comparison)


def _cross_lines(cross: dict) -> list[str]:
    return [
        "## Cross-collection test", "",
        f"Trained and validated on {', '.join(cross['trained_on'])}; tested on the {cross['test_images']} images of "
        f"{cross['tested_on']} that have no exact or near copy in {'them' if len(cross['trained_on']) > 1 else 'it'}. "
        f"{cross['left_out_with_copy']} of its {cross['collection_images']} images have one and are left out "
        "(scoring them would score memory, not generalisation).", "",
    ]


def cross_collection_summary(dataset, split) -> dict:
    """What protocol ``cross`` trained and tested on, for reports and ``compare``."""
    tested = dataset.collections[int(dataset.sources[split.test[0]])] if len(split.test) else ""
    copied = 0 if split.copied is None else len(split.copied)
    return {"trained_on": [c for c in dataset.collections if c != tested], "tested_on": tested,
            "test_images": int(len(split.test)), "left_out_with_copy": copied,
            "collection_images": int(len(split.test)) + copied}


def report_predictions(test: TestPredictions, out: Path, against: dict | None = None, extra: dict | None = None) -> dict:
    """Metrics of `predict_test_split`'s output, with the report written to `out` (plus the
    training curves when `out` holds the run's ``metrics.jsonl``), and `against`, a
    `paired_comparison`, when given. `extra` entries are added to the metrics before the report
    is written (``training_copies`` and ``unseen`` of `braintumor.evaluation.external` get a section).
    Returns the metrics dict."""
    from braintumor.metrics.calibration import expected_calibration_error, with_temperature

    info, context = test.info, test.context
    metrics = classification_metrics(test.labels, test.probs, info.classes, groups=test.groups)
    if test.members:  # the mean of several calibrated models: no one temperature to undo
        metrics["ensemble"] = [context["model"], *test.members]
    else:
        metrics["temperature"] = info.temperature
        uncalibrated = with_temperature(test.probs, 1 / info.temperature)
        metrics["ece_uncalibrated"] = expected_calibration_error(uncalibrated, test.labels)
    if test.sources is not None:
        metrics["by_source"] = metrics_by_source(test.labels, test.probs, test.sources, info.classes, test.groups)
    if test.cross is not None:
        metrics["cross_collection"] = test.cross
    if test.collections is not None:
        metrics["by_collection"] = metrics_by_source(test.labels, test.probs, test.collections, info.classes, test.groups)
    if against is not None:
        metrics["against"] = against
    metrics.update(extra or {})
    history = None
    if (out / "metrics.jsonl").is_file():
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    title = (f"braintumor — {context['protocol']} protocol, seed {context['split seed']}" if "split seed" in context
             else f"braintumor — {context['protocol']} data")
    if test.overlap or (against or {}).get("overlap"):
        metrics["held_out"] = False
        metrics["overlap"] = test.overlap
        metrics["overlap_note"] = f"NOT A HELD-OUT TEST: {overlap_words(test.overlap, against)}"
        title = f"{metrics['overlap_note']} — {title}"
    report = write_report(out, metrics, info.classes, test.skipped, history, title, context)
    metrics["report"] = str(report)
    return metrics


def overlap_words(overlap: dict | None, against: dict | None = None) -> str:
    """What a report scored on images its model (or the model it is compared with) had seen
    says of it, in its first line."""
    words = []
    for who, seen in (("the model", overlap), ((against or {}).get("model"), (against or {}).get("overlap"))):
        if seen:
            words.append(f"{who} trained or was validated on {seen['seen']} of the {seen['test_images']} test images")
    return "; ".join(words) + " (--allow-overlap)"


def make_split_sizes(split) -> str:
    sizes = split.sizes()
    return ", ".join(f"{k} {v}" for k, v in sizes.items())
