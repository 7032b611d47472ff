import numpy as np
import pytest
from PIL import Image

from braintumor.data.dataset import scan
from braintumor.data.duplicates import (
    DEFAULT_THRESHOLD,
    ImageHashes,
    check_threshold,
    copies_in,
    connected_groups,
    content_box,
    duplicate_groups,
    equal_pairs,
    file_groups,
    hash_dataset,
    hash_files,
    near_pairs,
    perceptual_hash,
)
from braintumor.errors import DataError

from planted import COPIES, distinct_slice, make_planted_tree, save_png


@pytest.fixture(scope="module")
def originals():
    rng = np.random.default_rng(7)
    return [distinct_slice(rng) for _ in range(30)]


def test_every_planted_near_copy_is_found(originals):
    """Recall 100%: each edit of each original is within the default threshold of it."""
    images, source = [], []
    for k, rgb in enumerate(originals):
        images.append(rgb)
        source.append(k)
        for edit in COPIES.values():
            images.append(edit(rgb))
            source.append(k)
    hashes = np.array([perceptual_hash(a) for a in images], dtype=np.uint64)
    i, j, distance = near_pairs(hashes, DEFAULT_THRESHOLD)
    found = set(zip(i.tolist(), j.tolist()))
    source = np.array(source)
    for k in range(len(originals)):
        members = np.flatnonzero(source == k)
        planted = {(a, b) for a in members for b in members if a < b and a == members[0]}
        assert planted <= found, f"original {k}: missed {sorted(planted - found)}"
    # and no pair links copies of two different originals
    assert all(source[a] == source[b] for a, b in found)
    assert distance.max() <= DEFAULT_THRESHOLD


def test_no_false_pair_among_clearly_different_images(originals):
    hashes = np.array([perceptual_hash(a) for a in originals], dtype=np.uint64)
    i, _, _ = near_pairs(hashes, DEFAULT_THRESHOLD)
    assert len(i) == 0


def test_content_box_ignores_margins_and_brightness():
    rng = np.random.default_rng(1)
    head = distinct_slice(rng, 64)[:, :, 0]
    framed = np.zeros((100, 120), dtype=np.uint8)
    framed[20:84, 30:94] = head
    top, bottom, left, right = content_box(framed)
    t, b, l, r = content_box(head)
    assert np.allclose((top, bottom, left, right), (t + 20, b + 20, l + 30, r + 30), atol=1)  # margins do not matter
    assert b - t < 60 and r - l < 60  # the black corners of the head image are left out too
    brighter = np.clip(framed.astype(int) * 1.5, 0, 255).astype(np.uint8)
    assert np.allclose(content_box(brighter), (top, bottom, left, right), atol=1)
    assert content_box(np.zeros((10, 12))) == (0, 10, 0, 12)


def test_pairs_and_groups_by_hand():
    hashes = np.array([[0b0000, 0], [0b0111, 0], [0b1111, 0], [2**40 - 1, 0]], dtype=np.uint64)
    i, j, d = near_pairs(hashes, 3)
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist())) == [(0, 1, 3), (1, 2, 1)]
    assert near_pairs(hashes, 0)[0].size == 0
    # 0-1-2 chain into one group although 0 and 2 are 4 bits apart; 3 stays alone
    assert connected_groups(4, i, j).tolist() == [0, 0, 0, 1]
    assert connected_groups(5, [4, 1], [2, 3]).tolist() == [0, 1, 2, 1, 2]
    a, b = equal_pairs(np.array(["x", "", "y", "x", "", "x"]))
    assert connected_groups(6, a, b).tolist() == [0, 1, 2, 0, 3, 0]


@pytest.mark.parametrize("bad", [-1, 25, 3.5, "8", True, None])
def test_threshold_out_of_range_is_a_clear_error(bad):
    with pytest.raises(DataError, match=r"threshold must be a whole number of bits in 0\.\.24"):
        check_threshold(bad)


def test_hash_files_reports_unreadable_and_tells_exact_levels_apart(tmp_path):
    rng = np.random.default_rng(3)
    rgb = distinct_slice(rng, 64)
    a = save_png(rgb, tmp_path / "a.png")
    b = save_png(rgb, tmp_path / "b.png", compress_level=1)  # same pixels, other bytes
    c = tmp_path / "c.png"
    c.write_bytes(a.read_bytes())  # same bytes
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    h = hash_files([a, b, c, bad], progress=False)
    assert h.readable.tolist() == [True, True, True, False]
    assert h.file_digest[0] == h.file_digest[2] != h.file_digest[1]
    assert h.pixel_digest[0] == h.pixel_digest[1] == h.pixel_digest[2]
    assert "not an image" in h.errors[3]
    assert h.sizes[0].tolist() == [64, 64, a.stat().st_size] and h.sizes[1, 2] == b.stat().st_size
    assert h.sizes[3].tolist() == [0, 0, 0]


def test_dataset_groups_are_cached_and_find_the_planted_copies(tmp_path, monkeypatch):
    root, planted = make_planted_tree(tmp_path / "d", per_class=3)
    ds = scan(root)
    groups = duplicate_groups(ds, progress=False)
    index = {p.relative_to(root).as_posix(): k for k, p in enumerate(ds.paths)}
    for first, second in planted.values():
        assert groups[index[first]] == groups[index[second]], (first, second)
    planted_files = {index[p] for pair in planted.values() for p in pair}
    others = [g for k, g in enumerate(groups) if k not in planted_files]
    assert len(set(others)) == len(others)  # every other image is alone
    # the second call reads the cache: decoding is not needed any more
    monkeypatch.setattr("braintumor.data.duplicates.read_image", lambda p: (_ for _ in ()).throw(AssertionError("decoded")))
    first, again = hash_dataset(ds, progress=False), hash_dataset(ds, progress=False)
    assert np.array_equal(first.perceptual, again.perceptual) and np.array_equal(first.sizes, again.sizes)
    assert (again.sizes[:, 2] == [p.stat().st_size for p in ds.paths]).all()


def test_file_groups_group_planted_copies_among_the_given_files_only(tmp_path):
    root, planted = make_planted_tree(tmp_path / "d", per_class=3)
    first, second = next(iter(planted.values()))
    lone = sorted(root.glob("Testing/*/img 1.png"))[:3]  # distinct slices, none of them planted
    groups = file_groups([root / first, *lone, root / second], progress=False)
    assert groups.tolist() == [0, 1, 2, 3, 0]


def test_rgb_and_grayscale_files_of_one_image_match(tmp_path):
    rng = np.random.default_rng(5)
    rgb = distinct_slice(rng, 64)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    h = hash_files([tmp_path / "gray.png", tmp_path / "rgb.png"], progress=False)
    assert h.pixel_digest[0] == h.pixel_digest[1]


def _hashes(files, pixels, perceptual) -> ImageHashes:
    perceptual = np.array([[p, p] for p in perceptual], dtype=np.uint64)  # pHash and dHash alike
    n = len(files)
    return ImageHashes(np.array(files), np.array(pixels), perceptual, np.full(n, ""), np.zeros((n, 3), dtype=np.int64))


def test_copies_in_finds_each_query_images_copy_at_its_strictest_level_and_nearest_image():
    flip = lambda k: sum(1 << b for b in range(k))  # noqa: E731  (the lowest k bits set)
    far = 0xFFFF_FFFF_0000_0000
    # reference rows: A (12 bits from the query's near image, linked to it only through B),
    # B (5 bits), C (9 bits; linked through B too), D (copied byte for byte), E (copied pixel for pixel)
    reference = _hashes(["a", "b", "c", "d", "e"], ["pa", "pb", "pc", "pd", "pe"],
                        [flip(12), flip(5), flip(9), far, far >> 8])
    query = _hashes(["d", "x", "y", "z"], ["pd", "pe", "py", "pz"], [far, far >> 8, 0, 0x0F0F_0F0F_0F0F_0F0F])
    found = copies_in(query, reference, threshold=8)
    assert found["level"].tolist() == ["byte", "pixel", "near", ""]
    assert found["match"].tolist() == [3, 4, 1, -1]  # the near image names B, the nearest, not A, the first
    assert found["bits"].tolist() == [0, 0, 5, -1]
    assert copies_in(query, reference, threshold=4)["level"].tolist() == ["byte", "pixel", "", ""]


def test_images_of_two_collections_pair_up_further_apart_than_within_one():
    from braintumor.data.duplicates import CROSS_COLLECTION_THRESHOLD, DEFAULT_THRESHOLD, ImageHashes, group_ids

    apart = DEFAULT_THRESHOLD + 2  # beyond the threshold within a collection, within the one between collections
    assert apart <= CROSS_COLLECTION_THRESHOLD
    base = np.uint64(0)
    flipped = np.uint64((1 << apart) - 1)  # `apart` bits differ in both hashes
    far = np.uint64(2**64 - 1) ^ flipped  # 64 - apart bits from row 1, 64 from row 0
    perceptual = np.array([[base, base], [flipped, flipped], [far, far]], dtype=np.uint64)
    hashes = ImageHashes(np.array(["a", "b", "c"]), np.array(["1", "2", "3"]), perceptual, np.array(["", "", ""]))
    assert len(set(group_ids(hashes))) == 3  # one collection: rows 0 and 1 are too far apart
    assert len(set(group_ids(hashes, sources=np.array([0, 0, 1])))) == 3
    ids = group_ids(hashes, sources=np.array([0, 1, 1]))
    assert ids[0] == ids[1] != ids[2]  # rows 0 and 1 from two collections: one group
