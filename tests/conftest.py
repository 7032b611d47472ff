"""Shared fixtures: small generated images and ImageFolder trees (never the real dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASS_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own decode cache and no dataset default."""
    monkeypatch.setenv("BRAINTUMOR_CACHE", str(tmp_path_factory.mktemp("cache")))


def synthetic_slice(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A fake 'slice': a dark background, a gray disc (the head) and a bright blob whose
    quadrant encodes the class, so a tiny model can learn it."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    img = np.zeros((size, size), dtype=np.float64)
    img[(yy - c) ** 2 + (xx - c) ** 2 < (0.42 * size) ** 2] = 90
    qy, qx = divmod(label, 2)
    by, bx = (0.3 + 0.4 * qy) * size, (0.3 + 0.4 * qx) * size
    img[(yy - by) ** 2 + (xx - bx) ** 2 < (0.1 * size) ** 2] = 250
    img += rng.normal(0, 8, img.shape)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def make_tree(root: Path, per_class: int = 6, splits: tuple[str, ...] = ("Training", "Testing"), size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, folder in enumerate(CLASS_FOLDERS):
            d = root / split / folder if split else root / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(synthetic_slice(label, rng, size)).save(d / f"img ({i}).jpg", quality=95)
    return root


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    """Training/Testing × 4 classes × 6 JPEGs of 48×48 pixels."""
    return make_tree(tmp_path / "data")
