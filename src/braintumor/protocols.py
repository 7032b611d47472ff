"""Evaluation protocols: which images are trained on, validated on and tested on.

- ``original``: the original study's; Training and Testing pooled, a stratified random 10% test
  split drawn with `seed` (327 of the 3,264 Sartaj images).
- ``official``: train on the Training folder, test on the Testing folder.

In both, the validation set (early stopping, model selection, calibration) is carved from the
training part, stratified, never from the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from .data import Dataset
from .errors import DataError

PROTOCOLS = ("original", "official")


@dataclass(frozen=True)
class Split:
    """Index arrays into a `Dataset`."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction <= 0:
        return index, index[:0]
    counts = np.bincount(labels[index])
    stratify = labels[index] if counts[counts > 0].min() >= 2 else None
    rest, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(held)


def make_split(dataset: Dataset, protocol: str = "original", seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1) -> Split:
    """Split `dataset` under `protocol`.

    Parameters
    ----------
    dataset : Dataset
    protocol : {"original", "official"}
    seed : int
        Seed of the random test split (``original``) and of the validation carve.
    test_fraction : float
        Share of all images held out for testing under ``original``.
    val_fraction : float
        Share of the training part held out for validation.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}", f"use one of: {', '.join(PROTOCOLS)}")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    labels = dataset.labels
    every = np.arange(len(dataset))
    if protocol == "original":
        trainval, test = _stratified(every, labels, test_fraction, seed)
    else:
        splits = np.asarray(dataset.splits)
        trainval, test = every[splits == "Training"], every[splits == "Testing"]
        if len(trainval) == 0 or len(test) == 0:
            raise DataError(
                f"the official protocol needs Training/ and Testing/ folders under {dataset.root}",
                "use --protocol original for a folder without split folders",
            )
    # A different stream for the validation carve than for the test split.
    train, val = _stratified(trainval, labels, val_fraction, seed + 10_000)
    return Split(train, val, test)
