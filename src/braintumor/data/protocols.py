"""Evaluation protocols: which images are trained on, validated on and tested on.

- ``original``: the original study's; Training and Testing pooled, a stratified random 10% test
  split drawn with `seed` (327 of the 3,264 Sartaj images).
- ``official``: train on the Training folder, test on the Testing folder.
- ``dedup``: the leak-free ``original``: exact and near-duplicate images are grouped (see
  `braintumor.data.duplicates`) and the stratified ~10% test split and the validation carve are
  group-aware (scikit-learn's `StratifiedGroupKFold`), so no group is split across train,
  validation and test.

In all, the validation set (early stopping, model selection, calibration) is carved from the
training part, stratified, never from the test set.

Excluded images (``exclude``: for example the likely wrong labels `braintumor.evaluation.label_issues`
lists) are dropped from the training and validation parts after the split is drawn, so the test
part is exactly the one the same protocol and seed give without exclusions. Corrected labels
(``relabel``, `run_labels`) likewise change the training and validation parts only: the split is
drawn with the given labels, and the test part is scored against them.

- ``cross``: cross-collection, for a dataset pooled from several collections (``scan`` of several
  folders): test on one collection's images that have no exact or near copy in the others, train
  and validate (group-aware) on the others. Its images with a copy in them are in no part.

Under ``dedup`` and ``cross`` the near-duplicate groups are formed across every collection, so
no group spans two parts whichever collections its members came from.

Cross-validation (``folds=K``, ``fold=i``): the test part is fold ``i`` of ``K`` stratified,
group-aware folds of the pooled data (under ``original`` every image is its own group).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from braintumor.data.dataset import Dataset, data_root, load_images, scan
from braintumor.errors import DataError
from braintumor.options import PROTOCOLS

GROUPED = ("dedup", "cross")  # the protocols that form near-duplicate groups


@dataclass(frozen=True)
class Split:
    """Index arrays into a `Dataset`, and the near-duplicate groups when the split used them.

    ``groups`` holds the group id of every image of the dataset (not only of the split's) under
    ``dedup`` and ``cross`` and is None otherwise, so that training can reuse it instead of
    grouping again. ``copied`` (``cross`` only) holds the images of the test collection left out
    because a copy of them is in a training collection.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    groups: np.ndarray | None = None
    copied: np.ndarray | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction <= 0:
        return index, index[:0]
    counts = np.bincount(labels[index])
    n_held = int(np.ceil(fraction * len(index)))
    # Stratify when every class can be represented on both sides; tiny sets are split plainly.
    stratifiable = counts[counts > 0].min() >= 2 and n_held >= (counts > 0).sum()
    stratify = labels[index] if stratifiable else None
    rest, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(held)


def _n_splits(fraction: float) -> int:
    """Number of folds whose one fold is about `fraction` of the data (0.1 -> 10)."""
    return max(2, round(1 / fraction))


def _group_fold(index: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_splits: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold` of a stratified `n_splits`-fold partition of `index` that keeps every group
    on one side; returns ``(rest, held)``. On small data the number of folds shrinks to the
    number of groups and of images in the largest class; with fewer than two, nothing is held out."""
    n_splits = min(n_splits, len(np.unique(groups[index])), np.bincount(labels[index]).max(initial=0))
    if n_splits < 2:
        return index, index[:0]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % 2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has k members": expected on small data
        rest, held = list(splitter.split(index, labels[index], groups[index]))[fold]
    return np.sort(index[rest]), np.sort(index[held])


def _train_share(train: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified share `fraction` of `train` that keeps every group whole (learning curves).

    Without duplicate groups (every image its own group) the share is exact; with groups it is
    the nearest whole number of group-aware folds: one of ``round(1 / fraction)`` folds up to a
    half, all but one of ``round(1 / (1 - fraction))`` above.
    """
    if fraction >= 1:
        return train
    if len(np.unique(groups[train])) == len(train):
        return _stratified(train, labels, 1 - fraction, seed)[0]
    if fraction <= 0.5:
        return _group_fold(train, labels, groups, _n_splits(fraction), 0, seed)[1]
    return _group_fold(train, labels, groups, _n_splits(1 - fraction), 0, seed)[0]


def check_folds(dataset: Dataset, groups: np.ndarray, folds: int, fold: int = 0) -> None:
    """Raise a `DataError` unless `fold` of `folds` is a valid cross-validation fold of `dataset`.

    Every class must have at least `folds` groups (duplicates count once), so that each fold
    can test on every class without splitting a group.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise DataError(f"folds must be a whole number of at least 2, got {folds!r}")
    if not 0 <= fold < folds:
        raise DataError(f"fold must be in 0..{folds - 1}, got {fold!r}")
    for k, name in enumerate(dataset.classes):
        n = len(np.unique(groups[dataset.labels == k]))
        if 0 < n < folds:
            raise DataError(
                f"folds={folds} is more than the {n} groups of images of class {name} (duplicates count as one group)",
                f"use --folds {n} or fewer, or add images of class {name}",
            )


def make_split(
    dataset: Dataset,
    protocol: str = "original",
    seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    folds: int = 0,
    fold: int = 0,
    progress: bool = False,
    train_fraction: float = 1.0,
    exclude: np.ndarray | None = None,
    test_collection: str = "",
) -> Split:
    """Split `dataset` under `protocol`.

    Parameters
    ----------
    dataset : Dataset
    protocol : {"original", "official", "dedup", "cross"}
    seed : int
        Seed of the random test split (``original``, ``dedup``) and of the validation carve.
    test_fraction : float
        Share of all images held out for testing under ``original``; under ``dedup`` the test
        part is one of ``round(1 / test_fraction)`` group-aware folds.
    val_fraction : float
        Share of the training part held out for validation.
    folds, fold : int
        Cross-validation: when `folds` is 2 or more, test on fold `fold` of `folds` instead of a
        `test_fraction` split (``original`` and ``dedup`` only).
    progress : bool
        Show a progress bar while ``dedup`` hashes images (the first time for a dataset).
    train_fraction : float
        Train on this stratified share of the training part only (near-duplicate groups kept
        whole under ``dedup``; see `_train_share`), for learning curves. Validation and test
        parts are those of the full split.
    exclude : numpy.ndarray, optional
        Indices of images left out of the training and validation parts (see `excluded_indices`);
        the test part does not change.
    test_collection : str
        Under ``cross``: the collection tested on (default: the last one).
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}", f"use one of: {', '.join(PROTOCOLS)}")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    if not 0.0 < train_fraction <= 1.0:
        raise DataError(f"train_fraction must be in (0, 1], got {train_fraction}")
    labels = dataset.labels
    every = np.arange(len(dataset))
    groups = every
    copied = None
    if protocol in GROUPED:
        from braintumor.data.duplicates import duplicate_groups  # hashes every image once (then cached)

        groups = duplicate_groups(dataset, progress=progress)
    if folds:
        if protocol in ("official", "cross"):
            raise DataError(f"cross-validation needs a pooled protocol, not {protocol}", "use --protocol dedup or original with --folds")
        check_folds(dataset, groups, folds, fold)
        trainval, test = _group_fold(every, labels, groups, folds, fold, seed)
    elif protocol == "original":
        trainval, test = _stratified(every, labels, test_fraction, seed)
    elif protocol == "dedup":
        trainval, test = (every, every[:0]) if test_fraction == 0 else _group_fold(every, labels, groups, _n_splits(test_fraction), 0, seed)
    elif protocol == "cross":
        trainval, test, copied = _cross_collection(dataset, groups, test_collection)
    else:
        splits = np.asarray(dataset.splits)
        trainval, test = every[splits != "Testing"], every[splits == "Testing"]  # (several collections: all but Testing/ trained on)
        if len(trainval) == 0 or len(test) == 0:
            raise DataError(
                f"the official protocol needs Training/ and Testing/ folders under {dataset.root}",
                "use --protocol original for a folder without split folders",
            )
    # Different streams for the validation carve and the training share than for the test split.
    if protocol in GROUPED:
        if val_fraction == 0:
            train, val = trainval, trainval[:0]
        else:
            train, val = _group_fold(trainval, labels, groups, _n_splits(val_fraction), 0, seed + 10_000)
    else:
        train, val = _stratified(trainval, labels, val_fraction, seed + 10_000)
    train = _train_share(train, labels, groups, train_fraction, seed + 20_000)
    if exclude is not None and len(exclude):
        train, val = train[~np.isin(train, exclude)], val[~np.isin(val, exclude)]
    return Split(train, val, test, groups if protocol in GROUPED else None, copied)


def held_out_collection(dataset: Dataset, name: str = "") -> int:
    """Index into ``dataset.collections`` of the collection `name` (default: the last one)."""
    if len(dataset.collections) < 2:
        raise DataError("protocol 'cross' needs two or more collections",
                        "give --data once per collection: trained on all but --test-collection, tested on it")
    if not name:
        return len(dataset.collections) - 1
    if name not in dataset.collections:
        raise DataError(f"no collection named {name!r} among {', '.join(dataset.collections)}",
                        "name the collection by its folder (masoud for .../masoud/Training)")
    return dataset.collections.index(name)


def _cross_collection(dataset: Dataset, groups: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(trainval, test, copied)`` of protocol ``cross``: the other collections, the test
    collection's images with no copy in them, and those with one."""
    held = dataset.sources == held_out_collection(dataset, name)
    every = np.arange(len(dataset))
    has_copy = np.isin(groups, groups[~held])
    return every[~held], every[held & ~has_copy], every[held & has_copy]


def excluded_indices(dataset: Dataset, paths) -> np.ndarray:
    """Indices into `dataset` of the images `paths` names, for `make_split`'s ``exclude``.

    Parameters
    ----------
    dataset : Dataset
    paths : iterable of str
        Image paths relative to ``dataset.root`` (as `braintumor label-issues` writes them), or
        absolute paths under it. A path among the dataset's skipped files is ignored (it is not
        trained on anyway).

    Raises
    ------
    DataError
        When a path is not an image of `dataset`.
    """
    found = [i for i in _image_rows(dataset, paths, "to exclude") if i is not None]
    return np.unique(np.asarray(found, dtype=np.int64))


def run_labels(dataset: Dataset, train_config: dict, rows: np.ndarray) -> np.ndarray:
    """The labels a training run learns from: ``dataset.labels`` with the run's corrected labels
    (``relabel``: ``{path: class}``, as `excluded_indices` reads paths) applied to the images of
    `rows` (its training and validation parts) only, so a test part keeps the labels it is scored
    against without corrections."""
    labels = dataset.labels.copy()
    relabel = train_config.get("relabel") or {}
    if relabel:
        paths = list(relabel)
        allowed = np.zeros(len(labels), dtype=bool)
        allowed[rows] = True
        for path, i in zip(paths, _image_rows(dataset, paths, "to relabel")):
            if i is not None and allowed[i]:
                labels[i] = dataset.classes.index(relabel[path])
    return labels


def uncorrected_copies(groups: np.ndarray, labels: np.ndarray, given: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Images of `rows` that keep their given label while a near-duplicate copy in `rows` was
    corrected to another class: the same picture trained on under two labels.

    Parameters
    ----------
    groups : numpy.ndarray
        Near-duplicate group of every image (`Split.groups`).
    labels, given : numpy.ndarray
        Every image's label after and before the corrections (`run_labels`, ``dataset.labels``).
    rows : numpy.ndarray
        The images that are trained or validated on.
    """
    rows = np.asarray(rows)
    fixed = rows[labels[rows] != given[rows]]
    stale = [i for i in rows[labels[rows] == given[rows]]
             if np.any((groups[fixed] == groups[i]) & (labels[fixed] != labels[i]))]
    return np.asarray(stale, dtype=np.int64)


def _image_rows(dataset: Dataset, paths, what: str) -> list[int | None]:
    """Row in `dataset` of each of `paths` (relative to its root or absolute under it); None for
    a skipped file. Raises `DataError` naming the paths that are not the dataset's images."""
    root = Path(dataset.root).resolve()
    index = {p.resolve().relative_to(root).as_posix(): i for i, p in enumerate(dataset.paths)}
    skipped = set()
    for path, _ in dataset.skipped:
        try:
            skipped.add(Path(path).resolve().relative_to(root).as_posix())
        except ValueError:
            pass
    rows, missing = [], []
    for path in paths:
        rel = Path(path)
        if rel.is_absolute():
            try:
                rel = rel.resolve().relative_to(root)
            except ValueError:
                missing.append(str(path))
                continue
        key = rel.as_posix()
        if key in index:
            rows.append(index[key])
        elif key in skipped:
            rows.append(None)
        else:
            missing.append(str(path))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            f"{len(missing)} of the images {what} are not in {dataset.root}: {shown}",
            "list paths relative to the dataset folder (as braintumor label-issues writes them), made for this dataset",
        )
    return rows


def run_split(
    dataset: Dataset, train_config: dict, protocol: str | None = None, seed: int | None = None, progress: bool = False
) -> Split:
    """The split a training run used, re-created from its stored training config.

    Parameters
    ----------
    dataset : Dataset
        The scanned data folder (the run's, for the run's own split).
    train_config : dict
        A checkpoint's ``train_config`` (``TrainConfig`` as a dict).
    protocol, seed : optional
        Split under another protocol or seed instead; the run's cross-validation fold applies
        only under its own protocol.
    progress : bool
        As for `make_split`.
    """
    cfg = train_config
    protocol = protocol or cfg.get("protocol", "original")
    seed = cfg.get("seed", 0) if seed is None else seed
    folds, fold = run_fold(cfg, protocol)
    exclude = excluded_indices(dataset, cfg["exclude"]) if cfg.get("exclude") else None
    return make_split(
        dataset, protocol, seed, cfg.get("test_fraction", 0.1), cfg.get("val_fraction", 0.1), folds, fold, progress,
        cfg.get("train_fraction", 1.0), exclude, cfg.get("test_collection", "") if protocol == "cross" else "",
    )


def recorded_parts(recorded: dict, recorded_root: str | Path, dataset: Dataset) -> dict[str, np.ndarray]:
    """Rows of `dataset` of each part of a run's ``split.json``.

    Parameters
    ----------
    recorded : dict
        The ``split.json`` content: ``train``, ``val`` and ``test`` lists of image paths.
    recorded_root : path or list of paths
        The data folder(s) the run recorded, under which those paths lie: images are matched by
        their path relative to it (to their common parent), so the dataset may have moved since.
    dataset : Dataset
        The dataset now.

    Returns
    -------
    dict
        ``{"train": rows, "val": rows, "test": rows}``; images no longer in `dataset` are left out.
    """
    recorded_root = data_root(recorded_root)
    row_of = {p.relative_to(dataset.root).as_posix(): i for i, p in enumerate(dataset.paths)}
    parts = {}
    for part in ("train", "val", "test"):
        paths = [Path(p) for p in recorded.get(part, [])]
        keys = [p.relative_to(recorded_root).as_posix() for p in paths if p.is_relative_to(recorded_root)]
        parts[part] = np.asarray([row_of[k] for k in keys if k in row_of], dtype=int)
    return parts


def load_run(checkpoint, info, data=None, progress: bool = False, protocol: str | None = None,
             seed: int | None = None) -> tuple[np.ndarray, Dataset, Split]:
    """The decoded images of the dataset a checkpoint was trained on, and its run's split: the one
    place that rebuilds a run's data (``evaluate``, external validation, ``fit-ood``, int8
    calibration).

    Parameters
    ----------
    checkpoint : path
        The checkpoint, named in error messages.
    info : ModelInfo
        Its stored information: training config, preprocessing, data fingerprint.
    data : path, optional
        Where the dataset is now (default: the folder recorded in the training config).
    progress : bool
        Progress bars while decoding and grouping.
    protocol, seed : optional
        Split the data under another protocol or seed than the run's own (`run_split`).

    Returns
    -------
    images : numpy.ndarray
        ``N x S x S x 3`` uint8, preprocessed with ``info.preprocess`` (cached on disk).
    dataset : Dataset
        The readable images, in the order of `images`.
    split : Split
        The run's split, re-created from its config (`run_split`).

    Raises
    ------
    DataError
        When no dataset is recorded or given, or the dataset's fingerprint is not the one the
        checkpoint was trained on.
    """
    config = info.train_config
    if data is None and not config.get("data"):
        raise DataError(f"{checkpoint} records no training data", "pass --data with the dataset it was trained on")
    dataset = scan(data if data is not None else config["data"], config.get("class_map") or None)
    images, found = load_images(dataset, info.preprocess, progress=progress)
    if info.data_fingerprint and found.fingerprint() != info.data_fingerprint:
        raise DataError(f"{found.root} is not the dataset {checkpoint} was trained on (its fingerprint differs)",
                        "pass --data with the dataset it was trained on")
    return images, found, run_split(found, config, protocol, seed, progress=progress)


def run_fold(train_config: dict, protocol: str) -> tuple[int, int]:
    """``(folds, fold)`` of a run's cross-validation when split under `protocol`: the run's own
    under its own protocol, ``(0, 0)`` (no cross-validation) under another."""
    if protocol != train_config.get("protocol", "original"):
        return 0, 0
    return train_config.get("folds", 0), train_config.get("fold", 0)
