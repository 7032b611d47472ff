"""Shared fixtures: small generated images and ImageFolder trees (never the real dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planted import distinct_slice, save_png
from synthetic import _train_tiny_quadrant_model, make_tree


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own decode cache and no dataset default."""
    monkeypatch.setenv("BRAINTUMOR_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    """Training/Testing × 4 classes × 6 JPEGs of 48×48 pixels."""
    return make_tree(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny trained 4-class checkpoint (128 px, `tumor_slice` classes) with OOD statistics."""
    return _train_tiny_quadrant_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def distinct_tree(tmp_path_factory):
    """4 classes x 6 distinct images, plus a copy of one image per class (a group of two)."""
    root = tmp_path_factory.mktemp("cv") / "data"
    rng = np.random.default_rng(4)
    for folder in ("glioma", "meningioma", "no_tumor", "pituitary"):
        for i in range(6):
            save_png(distinct_slice(rng, 64), root / folder / f"{i}.png")
        (root / folder / "copy.png").write_bytes((root / folder / "0.png").read_bytes())
    return root


@pytest.fixture(scope="session")
def tiny_crossval(distinct_tree, tmp_path_factory):
    """``braintumor train --folds 2 --protocol dedup`` for one short epoch on `distinct_tree`:
    returns the cross-validation folder and the JSON the command printed."""
    import contextlib
    import io
    import json

    from braintumor.cli import main

    out = tmp_path_factory.mktemp("crossval") / "cv"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("BRAINTUMOR_CACHE", str(out.parent / "cache"))
        code = main(["train", "--data", str(distinct_tree), "--out", str(out), "--protocol", "dedup", "--folds", "2",
                     "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--json", "-q"])
    assert code == 0
    return out, json.loads(printed.getvalue())


@pytest.fixture(scope="session")
def two_collections(tmp_path_factory):
    """Two collections of generated slices, the second with near copies of 8 of the first's
    (`twocollections.make_two_collections`): ``(first, second, copies)``."""
    from twocollections import make_two_collections

    return make_two_collections(tmp_path_factory.mktemp("collections"))
