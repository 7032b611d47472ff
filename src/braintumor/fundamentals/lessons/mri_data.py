"""The brain MRI data for the lessons: grayscale arrays and the evaluation protocol's split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintumor.data.dataset import Dataset, default_data_dir, load_images, scan
from braintumor.errors import DataError
from braintumor.data.preprocess import Preprocess
from braintumor.data.protocols import Split, make_split


@dataclass
class MRIData:
    """Grayscale images in [0, 1] (N x S x S float32), labels, the split and the dataset."""

    images: np.ndarray
    labels: np.ndarray
    split: Split
    dataset: Dataset


def load_mri(data: str | Path | None, image_size: int, protocol: str = "original", seed: int = 0, progress: bool = False) -> MRIData:
    """Decode (or read from the cache) every image at `image_size`, convert to gray and split.

    Uses the same preprocessing (foreground crop, square pad, resize) and the same protocol
    as the transfer-learning model, so the test images are the same ones.
    """
    dataset = scan(data if data is not None else default_data_dir())
    images, dataset = load_images(dataset, Preprocess(image_size=image_size), progress=progress)
    split = make_split(dataset, protocol, seed)
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        raise DataError(f"too few images in {dataset.root} for train, validation and test splits", "use a folder with at least 10 images per class")
    gray = images.astype(np.float32).mean(axis=3) / 255.0
    return MRIData(gray, dataset.labels, split, dataset)
