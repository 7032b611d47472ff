"""External validation: score a checkpoint on every image of a labelled folder it was not
trained on, and find out whether that folder is as new to the model as it looks.

Public brain-MRI datasets are built from one another (several later collections include the
Sartaj images, re-encoded or not), so an "external" test set often holds copies of the images
a model trained on. `training_copies` hashes both sides (`braintumor.data.duplicates`: byte,
pixel and near-duplicate levels) and marks every external image that has a copy among the
images the model trained or early-stopped on; `evaluate_external` reports the figures on all
images and on the unseen ones alone, and lists the copies in ``training_copies.csv``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from braintumor.data.duplicates import (DEFAULT_THRESHOLD, ImageHashes, check_threshold, copies_in, group_ids, hash_dataset,
                         summarise_copies)
from braintumor.errors import BrainTumorError, DataError
from braintumor.files import locked_folder, write_text


def training_copies(checkpoint, info, external: ImageHashes, train_data=None, threshold: int = DEFAULT_THRESHOLD,
                    progress: bool = True) -> dict:
    """Which external images have a copy among the images a checkpoint trained or was
    early-stopped on (its training and validation parts, re-created from its stored config).

    Parameters
    ----------
    checkpoint : path
        The checkpoint, named in messages.
    info : ModelInfo
        Its stored information (training config, preprocessing, data fingerprint).
    external : ImageHashes
        Hashes of the external images (`braintumor.data.duplicates.hash_dataset`).
    train_data : path, optional
        Where the model's training dataset is now (default: the folder its config records).
    threshold : int
        Near-duplicate Hamming threshold in bits, as for ``braintumor audit``.

    Returns
    -------
    dict
        Per external image, as `braintumor.data.duplicates.copies_in` finds them: ``level`` ("byte",
        "pixel", "near" or ""), ``match`` (the training image it copies, a path, or None),
        ``bits`` (their hash distance) and ``match_label`` (that image's class index; -1:
        none). Then ``seen``, how many training and validation images were compared, and
        ``seen_paths``, which.

    Raises
    ------
    DataError
        When the training data is not recorded, not found, or not the dataset the checkpoint
        was trained on.
    """
    from braintumor.data.protocols import load_run

    threshold = check_threshold(threshold)  # before the training data is read
    _, dataset, split = load_run(checkpoint, info, train_data, progress=progress)
    rows = np.sort(np.concatenate([split.train, split.val]))
    hashes = hash_dataset(dataset, progress=progress)
    seen = hashes.take(rows)
    found = copies_in(external, seen, threshold)
    match = found["match"]
    paths = [str(dataset.paths[rows[m]]) if m >= 0 else None for m in match]
    labels = np.array([int(dataset.labels[rows[m]]) if m >= 0 else -1 for m in match])
    seen_paths = [str(dataset.paths[r]) for r in rows]
    return {"level": found["level"], "match": paths, "match_label": labels, "bits": found["bits"], "seen": len(rows),
            "seen_paths": seen_paths, "train_data": str(dataset.root)}


def evaluate_external(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    train_data: str | Path | None = None,
    members: list | tuple = (),
    threshold: int = DEFAULT_THRESHOLD,
    check_copies: bool = True,
    class_map: dict[str, str] | None = None,
    progress: bool = True,
) -> dict:
    """Score a checkpoint (or an ensemble) on every image of a labelled folder and write a report.

    Parameters
    ----------
    checkpoint : path
        A ``.safetensors`` checkpoint.
    data : path
        The external dataset, laid out as for training (``<class>/<image>``, or with
        ``Training``/``Testing`` folders: both are scored).
    out : path
        Report folder (created): ``report.md``, ``test_metrics.json``, figures, and
        ``training_copies.csv``.
    train_data : path, optional
        Where each model's training dataset is now, for the copy check (default: the folder its
        config records).
    members : list of path
        More checkpoints of the same preprocessing, averaged with the first (an ensemble).
    threshold : int
        Near-duplicate Hamming threshold for the copy check.
    check_copies : bool
        Compare the images with the models' training images (needs their training data).
    class_map : dict, optional
        Folder names of `data` that are not known spellings of a class, ``{folder: class}``,
        on top of the first model's own (`braintumor.data.classes.parse_class_map`).

    Returns
    -------
    dict
        The metrics, as `braintumor.evaluation.evaluator.evaluate` returns them, plus ``training_copies``
        (counts per level, label conflicts) and ``unseen`` (the metrics of the images without
        a copy) when the check ran.
    """
    with locked_folder(out):  # (a report folder is one command's at a time)
        return _evaluate_external(Path(checkpoint), data, Path(out), train_data, members, threshold, check_copies,
                                  class_map, progress)


def _evaluate_external(checkpoint: Path, data, out: Path, train_data, members, threshold: int, check_copies: bool,
                       class_map, progress: bool) -> dict:
    from braintumor.model.checkpoint import check_same_inputs, load_checkpoint
    from braintumor.data.dataset import load_images, scan
    from braintumor.evaluation.evaluator import TestPredictions, classification_metrics, model_context, report_predictions
    from braintumor.inference.forward import predict_images
    from braintumor.inference.runtime import mean_probabilities

    model, info = load_checkpoint(checkpoint)
    loaded = [(checkpoint, model, info)] + [(Path(m), *load_checkpoint(m)) for m in members]
    for path, _, other in loaded[1:]:
        check_same_inputs(path, other, checkpoint, info)
    dataset = scan(data, {**(info.train_config.get("class_map") or {}), **(class_map or {})} or None)
    images, dataset = load_images(dataset, info.preprocess, progress=progress)
    if len(dataset) == 0:
        raise DataError(f"none of the images under {data} could be read", "pass a folder of readable JPEG, PNG, BMP or TIFF images")
    hashes = hash_dataset(dataset, progress=progress)
    groups = group_ids(hashes, DEFAULT_THRESHOLD)
    copies = None
    if check_copies:  # before the scoring, so that a missing training folder fails fast
        found = []
        for path, _, i in loaded:
            try:
                found.append(training_copies(path, i, hashes, train_data, threshold, progress))
            except DataError as exc:
                raise DataError(f"cannot check {data} for copies of {path}'s training images: {exc.message}",
                                "pass --train-data with the dataset the model was trained on, or --no-copy-check "
                                "to score the folder without that check") from exc
        copies = _merge(found)
    every = [predict_images(m, images, tta=i.tta, temperature=i.temperature, tta_view=i.tta_view) for _, m, i in loaded]
    probs = mean_probabilities(every)
    context = {
        **model_context(checkpoint, info, data),
        "protocol": "external",
        "test images": f"all {len(dataset)} readable images of the folder",
        **({"ensemble": f"{len(loaded)} models averaged: " + ", ".join(str(p) for p, _, _ in loaded)} if members else {}),
        "trained on": ", ".join(sorted({f"{i.train_config.get('data')} ({i.train_config.get('protocol', 'original')}, "
                                        f"seed {i.train_config.get('seed', 0)})" for _, _, i in loaded})),
    }
    test = TestPredictions(probs, dataset.labels, list(dataset.paths), groups, info, context, dataset.skipped,
                           list(dataset.splits), [str(m) for m in members], every if members else [])
    extra = {}
    if copies is not None:
        extra["training_copies"] = _summary(copies, dataset, info.classes)
        unseen = copies["level"] == ""
        if unseen.any():
            sub = classification_metrics(dataset.labels[unseen], probs[unseen], list(info.classes), groups=groups[unseen])
            extra["unseen"] = {k: sub[k] for k in ("n", "correct", "accuracy", "accuracy_ci", "macro_f1",
                                                   "macro_f1_ci", "loss", "ece") if k in sub}
        _write_copies(out, dataset, copies, info.classes, probs)
    return report_predictions(test, out, extra=extra)


def _merge(found: list[dict]) -> dict:
    """One copy per external image over several models' training sets: the strongest level,
    and of two near copies the nearer."""
    rank = {"": 0, "near": 1, "pixel": 2, "byte": 3}
    best = dict(found[0])
    for other in found[1:]:
        better = np.array([rank[b] > rank[a] or (b == a == "near" and nb < na)
                           for a, b, na, nb in zip(best["level"], other["level"], best["bits"], other["bits"])], dtype=bool)
        best["level"] = np.where(better, other["level"], best["level"])
        best["match"] = [o if u else m for m, o, u in zip(best["match"], other["match"], better)]
        best["match_label"] = np.where(better, other["match_label"], best["match_label"])
        best["bits"] = np.where(better, other["bits"], best["bits"])
    best["seen"] = len(set().union(*(f["seen_paths"] for f in found)))  # members may share training images
    best["train_data"] = ", ".join(sorted({f["train_data"] for f in found}))
    return best


def _summary(copies: dict, dataset, classes) -> dict:
    return {**summarise_copies(copies["level"], dataset.labels, copies["match_label"], classes),
            "compared_with": copies["seen"], "train_data": copies["train_data"]}


def _write_copies(out: Path, dataset, copies: dict, classes, probs) -> Path:
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["path", "label", "predicted", "level", "training_copy", "training_label", "hash_bits"])
    for k, p in enumerate(dataset.paths):
        if copies["level"][k]:
            w.writerow([str(p), classes[dataset.labels[k]], classes[int(np.argmax(probs[k]))], copies["level"][k],
                        copies["match"][k], classes[copies["match_label"][k]], int(copies["bits"][k])])
    return write_text(out / "training_copies.csv", table.getvalue())


def check_external_args(protocol=None, seed=None, against=None) -> None:
    """`--external` scores a whole folder: a protocol's split, seed or paired comparison does not apply."""
    given = [name for name, v in (("--protocol", protocol), ("--seed", seed), ("--against", against)) if v is not None]
    if given:
        raise BrainTumorError(f"{', '.join(given)} cannot be combined with --external (every image of the folder is scored)",
                              "drop " + ", ".join(given) + ", or evaluate a protocol's test split without --external")
