"""Finding exact and near-duplicate images, and grouping them.

Three levels of "the same image", from strict to loose:

- **byte-identical**: the files have the same SHA-256;
- **pixel-identical** (exact): the decoded RGB arrays are equal, so a file re-saved with other
  metadata or another JPEG encoder still counts;
- **near-duplicate**: the perceptual hashes of the two images differ in at most `threshold` bits.

The perceptual hashes (`imagehash`'s pHash and dHash, 64 bits each) are taken on the *content
box* of the grayscale image: the central 96% of its brightness mass along each axis. MRI slices
sit on black margins of varying width; normalising to the content box makes the hashes ignore
those margins, so a copy that was resized, padded, shifted or had its margins cropped hashes
like the original. Two images are a near pair when *both* hashes are within the threshold.

Near pairs are joined into groups by connected components: if A~B and B~C, then A, B and C are
one group even when A and C differ more. Between two collections (a dataset pooled from several
folders) the threshold is `CROSS_COLLECTION_THRESHOLD`: a collection built from another re-crops
and resizes its images, so its copies sit further from their originals than copies within one
collection do. The ``dedup`` protocol never splits a group across
train, validation and test. Hashes of a dataset are cached on disk, keyed by its fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from braintumor.files import OutputError, atomic_write, remove_temporaries
from braintumor.data.dataset import Dataset, cache_dir
from braintumor.errors import DataError, ImageError
from braintumor.data.imageio import read_image

DEFAULT_THRESHOLD = 8
"""Default Hamming threshold in bits (of 64). On the Sartaj data, pairs up to 8 bits apart are
copies of one slice or its neighbouring slice in the same scan; past 10 bits unrelated patients
start to match and groups chain into large clusters."""

CROSS_COLLECTION_THRESHOLD = 10
"""Hamming threshold between images of two collections. Masoud-Training's copies of Sartaj images
are cropped to the head and resized to 224 px: pairs 9-10 bits apart were the same images, at
12 bits neighbouring slices and unrelated patients started to match, and the largest group grew
from 193 images (at 10) to 537 (``docs/collections.md``)."""

MAX_THRESHOLD = 24
HASH_VERSION = 2  # bump when the hashing changes, so that cached hashes are recomputed
_BOX_MASS = 0.02  # share of brightness mass left outside the content box on each side


def check_threshold(threshold) -> int:
    """Return `threshold` as an int, or raise a `DataError` naming the valid range."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 0 <= threshold <= MAX_THRESHOLD:
        raise DataError(
            f"threshold must be a whole number of bits in 0..{MAX_THRESHOLD}, got {threshold!r}",
            f"the default is {DEFAULT_THRESHOLD}; 0 finds only copies whose hashes are equal, and above "
            f"{MAX_THRESHOLD} unrelated images match",
        )
    return int(threshold)


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(top, bottom, left, right)`` of the central brightness mass of `gray`.

    Dim background (below 10% of the 99th-percentile brightness) is ignored; the box then leaves
    2% of the remaining mass outside on each side. Scaling all brightness by a constant does not
    move the box. A blank image gives the whole image.
    """
    g = np.asarray(gray, dtype=np.float64)
    g = np.clip(g - 0.1 * np.percentile(g, 99), 0, None)
    total = g.sum()
    if total <= 0:
        return 0, g.shape[0], 0, g.shape[1]

    def span(profile: np.ndarray) -> tuple[int, int]:
        cumulative = np.cumsum(profile) / total
        return int(np.searchsorted(cumulative, _BOX_MASS)), int(np.searchsorted(cumulative, 1 - _BOX_MASS)) + 1

    top, bottom = span(g.sum(axis=1))
    left, right = span(g.sum(axis=0))
    return top, min(bottom, g.shape[0]), left, min(right, g.shape[1])


def perceptual_hash(rgb: np.ndarray) -> tuple[int, int]:
    """pHash and dHash (64-bit ints) of the content box of an ``H x W x 3`` uint8 image."""
    gray = Image.fromarray(rgb).convert("L")
    small = gray.copy()
    small.thumbnail((128, 128))  # the box is found on a small copy: faster, and less noisy
    top, bottom, left, right = content_box(np.asarray(small))
    sy, sx = gray.height / small.height, gray.width / small.width
    box = gray.crop((int(left * sx), int(top * sy), int(np.ceil(right * sx)), int(np.ceil(bottom * sy))))
    # imagehash resizes to 32 x 32 (pHash) and 9 x 8 (dHash) with a wide filter, slow from full size:
    # a fast two-step reduction to 128 x 128 first gives the same hashes at a fifth of the cost.
    box = box.resize((128, 128), Image.LANCZOS, reducing_gap=2.0)
    return int(str(imagehash.phash(box)), 16), int(str(imagehash.dhash(box)), 16)


@dataclass
class ImageHashes:
    """Fingerprints of a list of image files, one row per file.

    Attributes
    ----------
    file_digest : numpy.ndarray of str
        SHA-256 of the file's bytes ("" when unreadable).
    pixel_digest : numpy.ndarray of str
        BLAKE2 digest of the decoded image's size and RGB pixels ("" when unreadable).
    perceptual : numpy.ndarray
        ``N x 2`` uint64: pHash and dHash of the content box (0 when unreadable).
    errors : numpy.ndarray of str
        Why a file could not be read, "" for readable files.
    sizes : numpy.ndarray
        ``N x 3`` int64: the decoded image's width and height and the file's size in bytes
        (0 when unreadable), for `braintumor.audit.shortcuts` without reading the files again.
    """

    file_digest: np.ndarray
    pixel_digest: np.ndarray
    perceptual: np.ndarray
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))

    @property
    def readable(self) -> np.ndarray:
        return self.errors == ""

    def take(self, rows) -> "ImageHashes":
        """The hashes of rows `rows` only."""
        rows = np.asarray(rows, dtype=int)
        return ImageHashes(self.file_digest[rows], self.pixel_digest[rows], self.perceptual[rows], self.errors[rows],
                           self.sizes[rows])

    def concat(self, other: "ImageHashes") -> "ImageHashes":
        """These rows, then `other`'s."""
        return ImageHashes(*(np.concatenate([a, b]) for a, b in
                             [(self.file_digest, other.file_digest), (self.pixel_digest, other.pixel_digest),
                              (self.perceptual, other.perceptual), (self.errors, other.errors), (self.sizes, other.sizes)]))

    def __len__(self) -> int:
        return len(self.file_digest)


def _hash_one(path: Path) -> tuple[str, str, int, int, int, int, int] | str:
    try:
        raw = path.read_bytes()
        rgb = read_image(path)
    except ImageError as exc:
        return exc.message.split(": ", 1)[-1]
    except OSError as exc:
        return f"cannot open ({exc.strerror or exc})"
    pixels = hashlib.blake2b(f"{rgb.shape}".encode(), digest_size=16)
    pixels.update(rgb.tobytes())
    height, width = rgb.shape[:2]
    return (hashlib.sha256(raw).hexdigest(), pixels.hexdigest(), *perceptual_hash(rgb), width, height, len(raw))


def hash_files(paths: list[Path], workers: int | None = None, progress: bool = True) -> ImageHashes:
    """Decode every file in parallel threads and fingerprint it; unreadable files get an error."""
    n = len(paths)
    file_digest = np.full(n, "", dtype="<U64")
    pixel_digest = np.full(n, "", dtype="<U32")
    perceptual = np.zeros((n, 2), dtype=np.uint64)
    sizes = np.zeros((n, 3), dtype=np.int64)
    errors = np.full(n, "", dtype=object)
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(_hash_one, paths)
        for i, result in enumerate(tqdm(results, total=n, desc="hashing", unit="img", disable=not progress, leave=False)):
            if isinstance(result, str):
                errors[i] = result
            else:
                file_digest[i], pixel_digest[i] = result[0], result[1]
                perceptual[i] = result[2:4]
                sizes[i] = result[4:]
    return ImageHashes(file_digest, pixel_digest, perceptual, errors.astype(str), sizes)


def hash_dataset(dataset: Dataset, cache: bool = True, progress: bool = True) -> ImageHashes:
    """`hash_files` for every image of `dataset`, cached on disk by the dataset's fingerprint."""
    key = hashlib.sha256(f"hashes-v{HASH_VERSION}\0{dataset.fingerprint()}".encode()).hexdigest()[:24]
    cache_file = cache_dir() / f"hashes-{key}.npz"
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                return ImageHashes(npz["file_digest"], npz["pixel_digest"], npz["perceptual"], npz["errors"], npz["sizes"])
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache is rebuilt below
    hashes = hash_files(dataset.paths, progress=progress)
    if cache:
        remove_temporaries(cache_file.parent)  # a killed run's half-written cache
        try:  # atomically, under a name of its own: runs hashing the same data at once do not mix
            atomic_write(cache_file, lambda handle: np.savez(
                handle, file_digest=hashes.file_digest, pixel_digest=hashes.pixel_digest, perceptual=hashes.perceptual,
                errors=hashes.errors, sizes=hashes.sizes))
        except OutputError:
            pass  # caching is an optimisation only
    return hashes


def hash_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The larger of the pHash and dHash Hamming distances of ``... x 2`` hash arrays (broadcast)."""
    return np.maximum(np.bitwise_count(a[..., 0] ^ b[..., 0]), np.bitwise_count(a[..., 1] ^ b[..., 1]))


def near_pairs(perceptual: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` whose pHash and dHash both differ in at most `threshold` bits.

    Returns
    -------
    i, j : numpy.ndarray
        Row indices of the pairs.
    distance : numpy.ndarray
        The larger of the two Hamming distances of each pair.
    """
    threshold = check_threshold(threshold)
    hashes = np.asarray(perceptual, dtype=np.uint64)
    n = len(hashes)
    block = max(1, 2**24 // max(n, 1))  # rows compared at once: bounds memory on big datasets
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        distance = hash_distance(rows[:, None], hashes[None, :])
        i, j = np.nonzero(distance <= threshold)
        keep = i + start < j
        found_i.append(i[keep] + start)
        found_j.append(j[keep])
        found_d.append(distance[i[keep], j[keep]])
    if not found_i:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d).astype(int)


def equal_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` that chain together all rows with the same non-empty key."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    same = (keys[order][1:] == keys[order][:-1]) & (keys[order][1:] != "")
    return order[:-1][same], order[1:][same]


def connected_groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Group id of each of `n` items, given linked pairs ``(i[k], j[k])``.

    Groups are the connected components of the graph; ids are ``0..G-1`` in the order of each
    group's first item, and an item without links is a group of its own.
    """
    i, j = np.asarray(i, dtype=int), np.asarray(j, dtype=int)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(len(first), dtype=int)
    renumber[np.argsort(first)] = np.arange(len(first))
    return renumber[labels]


def group_ids(hashes: ImageHashes, threshold: int = DEFAULT_THRESHOLD, sources: np.ndarray | None = None,
              cross_threshold: int = CROSS_COLLECTION_THRESHOLD) -> np.ndarray:
    """Near-duplicate group of every row: pixel-identical and near pairs, connected.

    With `sources` (the collection of each row), rows of two collections pair up to
    `cross_threshold` bits apart (never less than `threshold`). Unreadable files never match
    anything and are groups of their own.
    """
    readable = np.flatnonzero(hashes.readable)
    if sources is None or len(np.unique(sources)) < 2:
        ni, nj, _ = near_pairs(hashes.perceptual[readable], threshold)
    else:
        ni, nj, bits = near_pairs(hashes.perceptual[readable], max(threshold, cross_threshold))
        src = np.asarray(sources)[readable]
        keep = (bits <= threshold) | (src[ni] != src[nj])
        ni, nj = ni[keep], nj[keep]
    ei, ej = equal_pairs(hashes.pixel_digest)
    i = np.concatenate([readable[ni], ei])
    j = np.concatenate([readable[nj], ej])
    return connected_groups(len(hashes), i, j)


def copies_in(query: ImageHashes, reference: ImageHashes, threshold: int = DEFAULT_THRESHOLD) -> dict:
    """Which `query` images have a copy among the `reference` images, and which copy.

    The two sets are grouped together at each level (byte-identical, pixel-identical,
    near-duplicate groups as `group_ids` forms them); a query image whose group holds a
    reference image has a copy, at the strictest level where it does.

    Returns
    -------
    dict
        Per query image: ``level``, "byte", "pixel", "near" or "" (no copy); ``match``, the row
        of its copy in `reference` (-1: none), for a near copy the reference image of its group
        nearest by perceptual hash; ``bits``, the hash distance to that copy (0 for byte and
        pixel copies; above `threshold` when the two are linked only through other images of
        the group, as connected components allow; -1: none).
    """
    threshold = check_threshold(threshold)
    both, n = query.concat(reference), len(query)
    level, match, bits = np.full(n, "", dtype=object), np.full(n, -1), np.full(n, -1)
    # Weaker levels first, so that an exact copy is reported as such.
    for name, ids in (("near", group_ids(both, threshold)),
                      ("pixel", connected_groups(len(both), *equal_pairs(both.pixel_digest))),
                      ("byte", connected_groups(len(both), *equal_pairs(both.file_digest)))):
        found = _first_reference_row(ids, n)
        has = np.flatnonzero(found >= 0)
        if name == "near":  # every image of a byte or pixel group is the same image; not so for near
            found[has], bits[has] = _nearest_reference_rows(ids, both.perceptual, n, has)
        else:
            bits[has] = 0
        level[has], match[has] = name, found[has]
    return {"level": level.astype(str), "match": match, "bits": bits}


def summarise_copies(level: np.ndarray, labels: np.ndarray, copy_labels: np.ndarray, classes) -> dict:
    """Counts of `copies_in`'s finding: ``images``, ``with_a_copy``, ``per_level``, ``per_class``
    (of the query images' `labels`) and ``label_conflicts``, copies filed under another class
    than the image they copy (whose class indices are `copy_labels`)."""
    level, labels = np.asarray(level), np.asarray(labels)
    has = level != ""
    return {
        "images": len(level),
        "with_a_copy": int(has.sum()),
        "per_level": {name: int((level == name).sum()) for name in ("byte", "pixel", "near")},
        "per_class": {c: {"images": int((labels == k).sum()), "with_a_copy": int((has & (labels == k)).sum())}
                      for k, c in enumerate(classes)},
        "label_conflicts": int((has & (np.asarray(copy_labels) != labels)).sum()),
    }


def _first_reference_row(ids: np.ndarray, n_query: int) -> np.ndarray:
    """For group ids of the rows [query; reference], the first reference row (counted from 0
    among the reference rows) in each query row's group, or -1 when its group has none."""
    first = {}
    for k in range(len(ids) - 1, n_query - 1, -1):
        first[ids[k]] = k - n_query
    return np.array([first.get(g, -1) for g in ids[:n_query]], dtype=int)


def _nearest_reference_rows(ids: np.ndarray, perceptual: np.ndarray, n_query: int,
                            rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the query rows `rows` (each with a reference image in its group), the reference row
    of that group nearest by perceptual hash, and their `hash_distance`."""
    members = {}
    for k in range(n_query, len(ids)):
        members.setdefault(ids[k], []).append(k)
    best, bits = np.empty(len(rows), dtype=int), np.empty(len(rows), dtype=int)
    for out, r in enumerate(rows):
        candidates = np.array(members[ids[r]])
        d = hash_distance(perceptual[candidates], perceptual[r]).astype(int)
        best[out], bits[out] = candidates[np.argmin(d)] - n_query, d.min()
    return best, bits


def duplicate_groups(dataset: Dataset, threshold: int = DEFAULT_THRESHOLD, progress: bool = True) -> np.ndarray:
    """Near-duplicate group id of every image of `dataset` (hashes cached on disk), across its
    collections too (`group_ids`' `sources`)."""
    return group_ids(hash_dataset(dataset, progress=progress), threshold, dataset.sources)


def file_groups(paths: list[Path], threshold: int = DEFAULT_THRESHOLD, progress: bool = True) -> np.ndarray:
    """Near-duplicate group id of each file in `paths`, among these files only (not cached).

    Used to resample a test set's copies together in its confidence intervals; hashing a few
    hundred images takes seconds.
    """
    return group_ids(hash_files(list(paths), progress=progress), threshold)
