"""Several collections pooled into one dataset: scanning, naming, and the splits that keep
near-duplicate groups whole across collections (`dedup`, `cross`)."""

import numpy as np
import pytest

from braintumor.data.dataset import collection_name, data_root, load_images, scan
from braintumor.data.preprocess import Preprocess
from braintumor.data.protocols import make_split
from braintumor.errors import DataError


def test_collections_are_pooled_with_their_names_and_own_class_spellings(two_collections):
    first, second, _ = two_collections
    pooled = scan([first, second])
    one, other = scan(first), scan(second)
    assert pooled.collections == ("first", "second")  # .../second/Training is named after its parent
    assert len(pooled) == len(one) + len(other)
    assert np.bincount(pooled.sources).tolist() == [len(one), len(other)]
    assert pooled.root == data_root([first, second]) == first.parent.resolve()
    # "notumor" and "no_tumor" folders map onto the same class
    assert np.bincount(pooled.labels, minlength=4).tolist() == (np.bincount(one.labels, minlength=4) + np.bincount(other.labels, minlength=4)).tolist()
    assert pooled.collection_of()[0] == "first" and pooled.collection_of()[-1] == "second"
    subset = pooled.subset([0, len(pooled) - 1])
    assert subset.collection_of() == ["first", "second"] and subset.collections == pooled.collections
    assert pooled.fingerprint() not in (one.fingerprint(), scan([second, first]).fingerprint())


def test_pooled_images_decode_and_cache_like_one_dataset(two_collections):
    first, second, _ = two_collections
    images, found = load_images(scan([first, second]), Preprocess(image_size=32), progress=False)
    again, cached = load_images(scan([first, second]), Preprocess(image_size=32), progress=False)
    assert images.shape[0] == len(found) == 64 and np.array_equal(images, again)
    assert cached.sources.tolist() == found.sources.tolist()


def test_a_folder_given_twice_or_inside_another_is_refused(two_collections):
    first, second, _ = two_collections
    with pytest.raises(DataError, match="the same as"):
        scan([first, first])
    with pytest.raises(DataError, match="inside"):
        scan([first, first / "Training"])


def test_a_collection_is_named_after_its_folder_or_the_parent_of_a_split_folder(tmp_path):
    assert collection_name(tmp_path / "masoud" / "Training") == "masoud"
    assert collection_name(tmp_path / "sartaj") == "sartaj"


def test_dedup_keeps_every_cross_collection_copy_on_one_side(two_collections):
    first, second, copies = two_collections
    pooled = scan([first, second])
    for seed in range(4):
        split = make_split(pooled, "dedup", seed=seed)
        part = np.full(len(pooled), -1)
        for k, rows in enumerate((split.train, split.val, split.test)):
            part[rows] = k
        for group in np.unique(split.groups):
            assert len(set(part[split.groups == group])) == 1
        copied = [i for i, p in enumerate(pooled.paths) if p.is_relative_to(second.resolve()) and p.name.startswith("copy")]
        assert len(copied) == len(copies) == 8
        for i in copied:  # each copy is grouped with an image of the first collection
            assert (pooled.sources[split.groups == split.groups[i]] == 0).any()


def test_cross_tests_on_the_held_out_collection_without_its_copies(two_collections):
    first, second, copies = two_collections
    pooled = scan([first, second])
    split = make_split(pooled, "cross")  # default: the last collection
    assert set(pooled.sources[split.train]) == set(pooled.sources[split.val]) == {0}
    assert set(pooled.sources[split.test]) == {1}
    assert sorted(pooled.paths[i].relative_to(second.resolve()).as_posix() for i in split.copied) == sorted(copies)
    assert len(split.test) + len(split.copied) == int((pooled.sources == 1).sum())
    assert len(split.train) + len(split.val) == int((pooled.sources == 0).sum())
    reverse = make_split(pooled, "cross", test_collection="first")
    assert set(pooled.sources[reverse.test]) == {0} and set(pooled.sources[reverse.train]) == {1}
    # the first collection's originals of the copies are left out of its test part
    assert len(reverse.copied) == 8


def test_cross_needs_two_collections_and_a_known_name(two_collections):
    first, second, _ = two_collections
    with pytest.raises(DataError, match="two or more collections"):
        make_split(scan(first), "cross")
    with pytest.raises(DataError, match="no collection named 'third'"):
        make_split(scan([first, second]), "cross", test_collection="third")
    with pytest.raises(DataError, match="cross-validation needs a pooled protocol"):
        make_split(scan([first, second]), "cross", folds=2)
