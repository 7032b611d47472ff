import numpy as np
import pytest

from braintumor.data import scan
from braintumor.errors import DataError
from braintumor.protocols import make_split

from conftest import make_tree


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
    from braintumor.data import Dataset

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
