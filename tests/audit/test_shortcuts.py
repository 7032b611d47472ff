import numpy as np
import pytest
from PIL import Image

from braintumor.data.duplicates import hash_files
from braintumor.audit.shortcuts import FEATURES, file_features, shortcut_check

from planted import distinct_slice


def test_file_features_read_width_height_and_bytes_per_pixel(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(distinct_slice(rng, 64)).resize((80, 60)).save(tmp_path / "a b (1).png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [tmp_path / "a b (1).png", tmp_path / "broken.jpg"]
    features = file_features(hash_files(paths, progress=False))
    assert features.shape == (2, len(FEATURES))
    assert features[0, 0] == 80 and features[0, 1] == 60
    assert features[0, 2] == pytest.approx(paths[0].stat().st_size / (80 * 60))
    assert np.isnan(features[1]).all()  # unreadable: left for the audit to report


def test_a_class_that_comes_with_its_own_image_size_is_found(tmp_path):
    rng = np.random.default_rng(1)
    sizes = (120, 100, 80, 140)  # one size per class, as when each class comes from another source
    paths, labels = [], []
    for label, size in enumerate(sizes):
        for i in range(12):
            path = tmp_path / f"{label}-{i}.png"
            Image.fromarray(distinct_slice(rng, size)).save(path)
            paths.append(path)
            labels.append(label)
    classes = ("glioma", "meningioma", "no_tumor", "pituitary")
    result = shortcut_check(file_features(hash_files(paths, progress=False)), labels, classes=classes)
    assert result["accuracy"] >= 0.95 and result["majority"] == 0.25
    assert set(result["recall"]) == set(classes) and min(result["recall"].values()) >= 0.85
    assert "width" in result["rules"] or "height" in result["rules"]
    assert result["folds"] == 5 and result["images"] == 48


def test_files_alike_in_every_class_score_near_chance(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(distinct_slice(rng, 96)).save(paths[-1])
    labels = np.arange(40) % 4
    result = shortcut_check(file_features(hash_files(paths, progress=False)), labels)
    assert result["accuracy"] < 0.5  # 0.25 is chance; a real shortcut scores near 1


def test_copies_never_straddle_folds():
    # 32 groups of 10 identical rows, labels drawn at random per group: nothing to learn but the
    # copies themselves. Scored without groups, a deep tree finds every copy's twin in training.
    rng = np.random.default_rng(3)
    group_labels = np.repeat(np.arange(4), 8)[rng.permutation(32)]
    groups = np.repeat(np.arange(32), 10)
    features = np.repeat(rng.normal(size=(32, 3)), 10, axis=0)
    labels = group_labels[groups]
    leaky = shortcut_check(features, labels, groups=None, depth=20)
    honest = shortcut_check(features, labels, groups=groups, depth=20)
    assert leaky["accuracy"] > 0.9
    assert honest["accuracy"] < 0.5


def test_unusable_input_is_named_or_skipped():
    with pytest.raises(ValueError, match="features"):
        shortcut_check(np.zeros((3, 3)), [0, 1])
    one_group = shortcut_check(np.ones((4, 3)), [0, 0, 1, 1], groups=[0, 0, 1, 2])
    assert "skipped" in one_group and "accuracy" not in one_group
    rows = np.arange(30, dtype=float).reshape(10, 3)
    rows[0] = np.nan
    assert shortcut_check(rows, np.arange(10) % 2)["images"] == 9
