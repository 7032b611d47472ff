import numpy as np
import pytest

from braintumor.data.classes import CLASSES
from braintumor.data.dataset import scan
from braintumor.errors import DataError
from braintumor.data.protocols import make_split, run_split

from synthetic import make_tree


@pytest.fixture
def ds(tmp_path):
    return scan(make_tree(tmp_path / "d", per_class=20, size=16))


def test_original_pools_and_holds_out_ten_percent(ds):
    split = make_split(ds, "original", seed=0)
    assert len(split.test) == int(np.ceil(0.1 * len(ds)))
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == len(ds) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert np.bincount(ds.labels[split.test]).tolist() == [4, 4, 4, 4]  # stratified
    assert {ds.splits[i] for i in split.test} == {"Training", "Testing"}  # pooled


def test_seeds_reproduce_and_differ(ds):
    a, b, c = make_split(ds, "original", 0), make_split(ds, "original", 0), make_split(ds, "original", 1)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)


def test_official_uses_folders_and_carves_validation_from_training(ds):
    split = make_split(ds, "official", seed=0)
    assert {ds.splits[i] for i in split.test} == {"Testing"}
    assert {ds.splits[i] for i in np.concatenate([split.train, split.val])} == {"Training"}
    assert len(split.val) == 8


def test_sartaj_sized_original_split_has_327_test_images(tmp_path):
    from braintumor.data.dataset import Dataset

    labels = np.repeat(np.arange(4), [926, 937, 500, 901])
    fake = Dataset(tmp_path, [tmp_path / f"{i}.jpg" for i in range(len(labels))], labels, [""] * len(labels))
    assert len(make_split(fake, "original", seed=0).test) == 327


def test_bad_protocol_and_fractions(ds):
    with pytest.raises(DataError, match="unknown protocol"):
        make_split(ds, "random")
    with pytest.raises(DataError, match="val_fraction"):
        make_split(ds, "original", val_fraction=1.5)


def test_official_without_split_folders(tmp_path):
    flat = scan(make_tree(tmp_path / "f", per_class=3, splits=("",), size=16))
    with pytest.raises(DataError, match="Training/ and Testing/"):
        make_split(flat, "official")


# ---- dedup protocol and cross-validation folds ---------------------------------------------


def _fake_dataset(tmp_path, labels):
    from braintumor.data.dataset import Dataset

    return Dataset(tmp_path, [tmp_path / f"{i}.png" for i in range(len(labels))], np.asarray(labels), [""] * len(labels))


def _assert_groups_kept_whole(split, groups, n):
    parts = [split.train, split.val, split.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))  # a partition of all images
    owners = [set(groups[p].tolist()) for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])


def test_dedup_never_splits_a_group_on_random_groupings(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(30, 160))
        # group sizes from 1 to 12, labels mostly shared within a group, sometimes not (conflicts)
        groups = np.repeat(np.arange(n), rng.integers(1, 13, n))[:n]
        rng.shuffle(groups)
        labels = rng.integers(0, 4, groups.max() + 1)[groups]
        flip = rng.random(n) < 0.05
        labels[flip] = rng.integers(0, 4, flip.sum())
        monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", lambda ds, progress=False, g=groups: g)
        ds = _fake_dataset(tmp_path, labels)
        seed = int(rng.integers(0, 1000))
        split = make_split(ds, "dedup", seed, test_fraction=float(rng.choice([0.1, 0.2, 0.3])), val_fraction=0.1)
        _assert_groups_kept_whole(split, groups, n)
        n_classes_with_2_groups = sum(len(set(groups[labels == k])) >= 2 for k in range(4))
        if n_classes_with_2_groups == 4:
            assert len(split.test) > 0 and len(split.val) > 0


def test_dedup_test_part_is_about_ten_percent_and_stratified(tmp_path, monkeypatch):
    labels = np.repeat(np.arange(4), [300, 300, 160, 280])
    groups = np.arange(len(labels)) // 2  # pairs of duplicates, same class
    monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", lambda ds, progress=False: groups)
    split = make_split(_fake_dataset(tmp_path, labels), "dedup", seed=3)
    assert abs(len(split.test) - 104) <= 4
    assert np.abs(np.bincount(labels[split.test]) - np.array([30, 30, 16, 28])).max() <= 2
    _assert_groups_kept_whole(split, groups, len(labels))
    # the split carries its groups, so that training need not group again; other protocols don't
    assert split.groups is groups
    assert make_split(_fake_dataset(tmp_path, labels), "original", seed=3).groups is None


def _paired_dataset(tmp_path, monkeypatch, counts):
    """A fake dataset of `counts` images per class, in pairs of duplicates: ``(dataset, labels, groups)``."""
    labels = np.repeat(np.arange(4), counts)
    groups = np.arange(len(labels)) // 2
    monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", lambda ds, progress=False: groups)
    return _fake_dataset(tmp_path, labels), labels, groups


def test_train_fraction_trains_on_a_stratified_share_with_groups_whole(tmp_path, monkeypatch):
    ds, labels, groups = _paired_dataset(tmp_path, monkeypatch, [300, 300, 160, 280])
    for protocol in ("dedup", "original"):
        full = make_split(ds, protocol, seed=3)
        for fraction in (0.25, 0.5, 0.75):
            part = make_split(ds, protocol, seed=3, train_fraction=fraction)
            # validation and test are the full split's; the training images a subset of its own
            assert np.array_equal(part.val, full.val) and np.array_equal(part.test, full.test)
            assert set(part.train) < set(full.train)
            assert abs(len(part.train) - fraction * len(full.train)) <= 0.02 * len(full.train)
            share = np.bincount(labels[part.train], minlength=4) / np.bincount(labels[full.train], minlength=4)
            assert np.abs(share - fraction).max() < 0.05  # stratified
            if protocol == "dedup":  # a group is in the share whole or not at all
                kept = np.isin(groups[full.train], groups[part.train])
                assert np.array_equal(kept, np.isin(full.train, part.train))
        assert np.array_equal(make_split(ds, protocol, seed=3, train_fraction=1.0).train, full.train)
    other = make_split(ds, "original", seed=4, train_fraction=0.5)
    assert not np.array_equal(other.train, make_split(ds, "original", seed=3, train_fraction=0.5).train)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(DataError, match="train_fraction"):
            make_split(ds, "original", train_fraction=bad)
    # a run's share is re-created from its config, and the option is checked when configured
    config = {"protocol": "dedup", "seed": 3, "train_fraction": 0.5}
    assert np.array_equal(run_split(ds, config).train, make_split(ds, "dedup", seed=3, train_fraction=0.5).train)
    from braintumor.errors import BrainTumorError
    from braintumor.training.trainer import TrainConfig

    with pytest.raises(BrainTumorError, match=r"train_fraction \(--train-fraction\) must be a number in \(0, 1\]"):
        TrainConfig(train_fraction=0)


def test_dedup_keeps_planted_copies_together(tmp_path):
    from braintumor.data.duplicates import duplicate_groups

    from planted import make_planted_tree

    root, planted = make_planted_tree(tmp_path / "p", per_class=8)
    ds = scan(root)
    groups = duplicate_groups(ds, progress=False)
    for seed in range(4):
        split = make_split(ds, "dedup", seed, test_fraction=0.25)
        _assert_groups_kept_whole(split, groups, len(ds))
    index = {p.relative_to(root).as_posix(): k for k, p in enumerate(ds.paths)}
    assert all(groups[index[a]] == groups[index[b]] for a, b in planted.values())


def test_folds_test_every_image_once_without_splitting_groups(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 70, 200)
    labels = (groups % 4).astype(int)
    monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", lambda ds, progress=False: groups)
    ds = _fake_dataset(tmp_path, labels)
    tested = []
    for fold in range(5):
        split = make_split(ds, "dedup", seed=2, folds=5, fold=fold)
        _assert_groups_kept_whole(split, groups, len(ds))
        tested.extend(split.test.tolist())
    assert sorted(tested) == list(range(len(ds)))
    original = [make_split(ds, "original", seed=2, folds=4, fold=f).test for f in range(4)]
    assert sorted(np.concatenate(original).tolist()) == list(range(len(ds)))


def test_too_many_folds_and_bad_fold_are_clear_errors(tmp_path, monkeypatch):
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    groups = np.concatenate([np.arange(10) // 4, 10 + np.arange(30)])  # class 0: 3 groups
    monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", lambda ds, progress=False: groups)
    ds = _fake_dataset(tmp_path, labels)
    with pytest.raises(DataError, match="folds=4 is more than the 3 groups of images of class glioma") as err:
        make_split(ds, "dedup", folds=4)
    assert "--folds 3" in err.value.hint
    make_split(ds, "dedup", folds=3, fold=2)  # fine
    make_split(ds, "original", folds=10, fold=9)  # every image its own group: 10 per class
    with pytest.raises(DataError, match="fold must be in 0..2"):
        make_split(ds, "dedup", folds=3, fold=3)
    with pytest.raises(DataError, match="at least 2"):
        make_split(ds, "original", folds=1)
    with pytest.raises(DataError, match="pooled protocol"):
        make_split(ds, "official", folds=3)


def test_run_split_recreates_a_runs_split_from_its_config(ds):
    from dataclasses import asdict

    from braintumor.training.trainer import TrainConfig

    config = asdict(TrainConfig(data=str(ds.root), protocol="original", seed=3, folds=4, fold=2, val_fraction=0.2))
    split, same = run_split(ds, config), make_split(ds, "original", 3, 0.1, 0.2, folds=4, fold=2)
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(split, part), getattr(same, part))
    # Another protocol or seed: that split, without the run's cross-validation fold.
    other = run_split(ds, config, protocol="official", seed=1)
    assert np.array_equal(other.test, make_split(ds, "official", 1, 0.1, 0.2).test)
    assert np.array_equal(run_split(ds, config, seed=5).test, make_split(ds, "original", 5, 0.1, 0.2, 4, 2).test)


# ---- excluded images -----------------------------------------------------------------------


def test_excluded_images_leave_training_and_validation_but_not_the_test_split(tmp_path, monkeypatch):
    from braintumor.data.protocols import excluded_indices

    ds, _, _ = _paired_dataset(tmp_path, monkeypatch, [120, 120, 60, 100])
    for protocol in ("original", "dedup"):
        full = make_split(ds, protocol, seed=1)
        # some training, some validation and some test images, named as label-issues writes them
        chosen = np.concatenate([full.train[:7], full.val[:3], full.test[:4]])
        names = [ds.paths[i].name for i in chosen]
        exclude = excluded_indices(ds, names)
        assert sorted(exclude.tolist()) == sorted(chosen.tolist())
        cut = make_split(ds, protocol, seed=1, exclude=exclude)
        assert np.array_equal(cut.test, full.test)  # the test split is never changed
        assert np.array_equal(cut.train, full.train[7:]) and np.array_equal(cut.val, full.val[3:])
        # a run re-creates the same split from its config
        again = run_split(ds, {"protocol": protocol, "seed": 1, "exclude": names})
        for part in ("train", "val", "test"):
            assert np.array_equal(getattr(again, part), getattr(cut, part))
    # absolute paths under the dataset work too; duplicates in the list count once
    absolute = [str(ds.paths[5]), str(ds.paths[5]), "6.png"]
    assert excluded_indices(ds, absolute).tolist() == [5, 6]


def test_corrected_labels_change_training_and_validation_labels_but_not_the_split_or_test_labels(tmp_path, monkeypatch):
    from braintumor.data.protocols import run_labels

    ds, _, _ = _paired_dataset(tmp_path, monkeypatch, [120, 120, 60, 100])
    for protocol in ("original", "dedup"):
        full = make_split(ds, protocol, seed=1)
        chosen = np.concatenate([full.train[:5], full.val[:2], full.test[:3]])
        new = {int(i): CLASSES[(ds.labels[i] + 1) % len(CLASSES)] for i in chosen}
        config = {"protocol": protocol, "seed": 1, "relabel": {ds.paths[i].name: c for i, c in new.items()}}
        relabelled = run_split(ds, config)
        for part in ("train", "val", "test"):  # the split is drawn with the folders' labels
            assert np.array_equal(getattr(relabelled, part), getattr(full, part))
        labels = run_labels(ds, config, np.r_[full.train, full.val])
        changed = np.flatnonzero(labels != ds.labels)
        assert sorted(changed.tolist()) == sorted(np.r_[full.train[:5], full.val[:2]].tolist())
        assert all(CLASSES[labels[i]] == new[int(i)] for i in changed)
        assert np.array_equal(labels[full.test], ds.labels[full.test])  # the test part keeps its labels
    assert np.array_equal(run_labels(ds, {}, np.arange(len(ds))), ds.labels)
    with pytest.raises(DataError, match=r"1 of the images to relabel are not in .*: nope.png"):
        run_labels(ds, {"relabel": {"nope.png": "glioma"}}, np.arange(len(ds)))


def test_uncorrected_copies_are_the_copies_left_with_a_label_their_group_was_corrected_from():
    from braintumor.data.protocols import uncorrected_copies

    groups = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    given = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    labels = given.copy()
    labels[[0, 3, 4, 5]] = [1, 2, 2, 2]  # group 0: one of three corrected; group 1: both; image 5: no change
    assert uncorrected_copies(groups, labels, given, np.arange(8)).tolist() == [1, 2]
    assert uncorrected_copies(groups, labels, given, np.array([0, 2, 3, 7])).tolist() == [2]  # image 1 is not trained on
    assert uncorrected_copies(groups, given, given, np.arange(8)).tolist() == []


def test_excluding_images_not_in_the_dataset_is_a_clear_error(ds, tmp_path):
    from braintumor.data.protocols import excluded_indices

    rel = ds.paths[0].relative_to(ds.root).as_posix()
    assert excluded_indices(ds, [rel]).tolist() == [0]
    with pytest.raises(DataError, match=r"2 of the images to exclude are not in .*: Training/glioma_tumor/nope.jpg, /elsewhere/x.png"):
        excluded_indices(ds, [rel, "Training/glioma_tumor/nope.jpg", "/elsewhere/x.png"])
    # a file the dataset skipped as unreadable is not trained on anyway: no error
    bad = ds.root / "Training" / "glioma_tumor" / "broken.jpg"
    bad.write_bytes(b"not an image")
    from braintumor.data.dataset import load_images
    from braintumor.data.preprocess import Preprocess

    _, readable = load_images(scan(ds.root), Preprocess(image_size=16), progress=False)
    assert any("broken.jpg" in p for p, _ in readable.skipped)
    assert excluded_indices(readable, ["Training/glioma_tumor/broken.jpg"]).tolist() == []
