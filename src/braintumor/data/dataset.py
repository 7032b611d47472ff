"""Dataset discovery, decoding and caching.

A dataset is an ImageFolder tree, either ``ROOT/<class>/<image>`` or with split folders,
``ROOT/{Training,Testing}/<class>/<image>`` (the Sartaj layout). Class folders may use any of
the common spellings (see `braintumor.data.classes`). Files that cannot be read are reported with
their path and reason and skipped; they never stop a run.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from braintumor.data.classes import CLASSES, canonical_class
from braintumor.errors import DataError, ImageError
from braintumor.files import OutputError, atomic_write, remove_temporaries
from braintumor.data.imageio import is_image_file, read_image
from braintumor.data.preprocess import Preprocess

DATA_ENV = "BRAINTUMOR_DATA"
CACHE_ENV = "BRAINTUMOR_CACHE"
_SPLIT_NAMES = {"training": "Training", "train": "Training", "testing": "Testing", "test": "Testing"}


FETCH_DIR = Path("data") / "sartaj"  # where `braintumor data fetch` unpacks the public dataset


def default_data_dir() -> Path:
    """``$BRAINTUMOR_DATA`` if set, else ``data/sartaj`` (where ``braintumor data fetch`` puts
    the dataset) if it exists, else ``../shared/data/sartaj``, from the working directory."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return FETCH_DIR if FETCH_DIR.is_dir() else Path("..") / "shared" / "data" / "sartaj"


@dataclass
class Dataset:
    """The images found under a root folder.

    Attributes
    ----------
    root : Path
    paths : list of Path
        Image files, in a stable sorted order.
    labels : numpy.ndarray
        Class index of each path into `classes`.
    splits : list of str
        ``"Training"``, ``"Testing"`` or ``""`` (no split folders) for each path.
    skipped : list of (str, str)
        ``(path, reason)`` of every file that was not used.
    sources : numpy.ndarray
        Index into `collections` of the collection (data folder) each path came from: all 0 for
        one folder.
    collections : tuple of str
        The collections' names (`collection_name`); `root` is their folders' common parent when
        there are several.
    """

    root: Path
    paths: list[Path]
    labels: np.ndarray
    splits: list[str]
    classes: tuple[str, ...] = CLASSES
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: np.ndarray | None = None
    collections: tuple[str, ...] = ()

    def __post_init__(self):
        if self.sources is None:
            self.sources = np.zeros(len(self.paths), dtype=np.int64)
        if not self.collections:
            self.collections = (collection_name(self.root),)

    def __len__(self) -> int:
        return len(self.paths)

    def collection_of(self) -> list[str]:
        """The collection name of every image."""
        return [self.collections[s] for s in self.sources]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        out: dict[str, dict[str, int]] = {}
        for split, label in zip(self.splits, self.labels):
            row = out.setdefault(split or "all", {c: 0 for c in self.classes})
            row[self.classes[label]] += 1
        return out

    def fingerprint(self) -> str:
        """SHA-256 over relative paths, sizes and labels: identifies the data a model saw."""
        h = hashlib.sha256()
        for path, label in zip(self.paths, self.labels):
            rel = path.relative_to(self.root).as_posix()
            h.update(f"{rel}\0{path.stat().st_size}\0{int(label)}\n".encode())
        return h.hexdigest()

    def subset(self, index) -> "Dataset":
        index = np.asarray(index, dtype=int)
        return Dataset(
            root=self.root,
            paths=[self.paths[i] for i in index],
            labels=self.labels[index],
            splits=[self.splits[i] for i in index],
            classes=self.classes,
            skipped=list(self.skipped),
            sources=self.sources[index],
            collections=self.collections,
        )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def data_folders(data) -> list[Path]:
    """The data folders of a ``data`` setting: one path, or a list of them (several collections)."""
    return [Path(d) for d in data] if isinstance(data, (list, tuple)) else [Path(data)]


def data_root(data) -> Path:
    """The folder image paths are relative to: the data folder, or the common parent of several."""
    folders = data_folders(data)
    if len(folders) == 1:
        return folders[0]
    return Path(os.path.commonpath([os.path.abspath(f) for f in folders]))


def collection_name(folder: str | Path) -> str:
    """A collection's name from its folder: the folder's name, or its parent's when the folder is a
    split folder (``masoud/Training`` is ``masoud``)."""
    folder = Path(os.path.abspath(folder))
    return (folder.parent.name if folder.name.lower() in _SPLIT_NAMES else folder.name) or "data"


def scan(data, class_map: dict[str, str] | None = None) -> Dataset:
    """Find the images under a data folder, or under several (`data` a list: one collection each).

    Each folder's class folders are mapped to classes on their own (their spellings may differ).
    Several folders are pooled into one `Dataset` whose ``sources`` tell the collections apart.

    Raises
    ------
    DataError
        When a folder is missing, has no class folders, has an unknown or empty class folder, or
        holds no images at all; or when one folder is given twice or lies inside another.
    """
    folders = data_folders(data)
    if len(folders) == 1:
        return _scan_one(folders[0], class_map)
    resolved = [f.resolve() for f in folders]
    for a, fa in enumerate(resolved):
        for b, fb in enumerate(resolved):
            if a != b and (fa == fb or fa.is_relative_to(fb)):
                raise DataError(f"data folder {folders[a]} is {'the same as' if fa == fb else 'inside'} {folders[b]}",
                                "give each collection's folder once, none inside another")
    parts = [_scan_one(Path(os.path.abspath(f)), class_map) for f in folders]  # paths under the common root
    names: list[str] = []
    for f in folders:  # unique names: a second "data" becomes "data-2"
        name = collection_name(f)
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return Dataset(
        root=data_root(folders),
        paths=[p for d in parts for p in d.paths],
        labels=np.concatenate([d.labels for d in parts]),
        splits=[s for d in parts for s in d.splits],
        classes=CLASSES,
        skipped=[s for d in parts for s in d.skipped],
        sources=np.concatenate([np.full(len(d), k, dtype=np.int64) for k, d in enumerate(parts)]),
        collections=tuple(names),
    )


def _scan_one(root: Path, class_map: dict[str, str] | None) -> Dataset:
    if not root.is_dir():
        raise DataError(
            f"data folder not found: {root}",
            f"pass --data PATH (or set ${DATA_ENV}) to a folder laid out as <class>/<image> or "
            "Training/<class>/<image> + Testing/<class>/<image>; `braintumor data fetch` downloads the public dataset",
        )
    top = _class_dirs(root)
    split_dirs = [d for d in top if d.name.lower() in _SPLIT_NAMES]
    groups = [(_SPLIT_NAMES[d.name.lower()], d) for d in split_dirs] if split_dirs else [("", root)]
    if not top:
        raise DataError(
            f"no class folders in {root}",
            "lay the data out as <class>/<image> or Training/<class>/<image> (classes: " + ", ".join(CLASSES) + ")",
        )
    paths: list[Path] = []
    labels: list[int] = []
    splits: list[str] = []
    skipped: list[tuple[str, str]] = []
    for split, folder in groups:
        class_dirs = _class_dirs(folder)
        if not class_dirs:
            raise DataError(f"no class folders in {folder}", "add one folder per class: " + ", ".join(CLASSES))
        for class_dir in class_dirs:
            label = CLASSES.index(canonical_class(class_dir.name, class_map))
            found = 0
            for dirpath, dirnames, filenames in os.walk(class_dir):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    if not is_image_file(path):
                        skipped.append((str(path), f"not an image file (extension {path.suffix or 'none'!r})"))
                        continue
                    paths.append(path)
                    labels.append(label)
                    splits.append(split)
                    found += 1
            if found == 0:
                raise DataError(
                    f"class folder {class_dir} holds no images",
                    "add JPEG/PNG/BMP/TIFF images to it or remove the folder",
                )
    if not paths:
        raise DataError(f"no images found under {root}", "add JPEG, PNG, BMP or TIFF files to the class folders")
    return Dataset(root, paths, np.asarray(labels, dtype=np.int64), splits, CLASSES, skipped)


def read_path_list(file: str | Path) -> list[str]:
    """Image paths listed in `file`: the ``path`` column of a CSV (such as the one
    `braintumor label-issues` writes), or else one path per line (blank lines and lines starting
    with ``#`` ignored).

    Raises
    ------
    DataError
        When `file` cannot be read or lists no path.
    """
    import csv

    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the list of images {file}: {e}", "give a CSV with a 'path' column or a text file with one path per line")
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]), []) if lines else []
    if "path" in [h.strip() for h in header]:
        rows = csv.DictReader(lines, skipinitialspace=True)
        paths = [row["path"].strip() for row in rows if (row.get("path") or "").strip()]
    else:
        paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise DataError(f"{file} lists no images", "give a CSV with a 'path' column or a text file with one path per line")
    return paths


def read_relabel_list(file: str | Path) -> dict[str, str]:
    """Corrected labels listed in `file`: a CSV with a ``path`` column and a ``corrected`` column
    holding the right class (any folder spelling `canonical_class` accepts), such as
    `braintumor label-issues`' ``label_issues.csv`` once a reviewer has filled that column in.
    Rows with an empty ``corrected`` keep their label and are ignored.

    Returns
    -------
    dict
        ``{path: class}``, the path as written and the class canonical.

    Raises
    ------
    DataError
        When `file` cannot be read, lacks either column, names a class that is not one, gives one
        image two classes, or corrects no image.
    """
    import csv

    file = Path(file)
    fix = "give a CSV with 'path' and 'corrected' columns, e.g. label-issues' label_issues.csv with 'corrected' filled in"
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the list of corrected labels {file}: {e}", fix)
    rows = csv.DictReader(lines, skipinitialspace=True)
    header = [h.strip() for h in rows.fieldnames or []]
    if "path" not in header or "corrected" not in header:
        raise DataError(f"{file} has no 'path' and 'corrected' columns (its columns: {', '.join(header) or 'none'})", fix)
    rows.fieldnames = header
    corrected: dict[str, str] = {}
    for line, row in enumerate(rows, 2):
        path, name = (row.get("path") or "").strip(), (row.get("corrected") or "").strip()
        if not name:
            continue
        if not path:
            raise DataError(f"{file}, line {line}: a corrected label without a path", fix)
        try:
            label = canonical_class(name)
        except DataError:
            raise DataError(f"{file}, line {line}: {name!r} is not a class", f"write one of: {', '.join(CLASSES)}") from None
        if corrected.setdefault(path, label) != label:
            raise DataError(f"{file}, line {line}: {path} is corrected to both {corrected[path]} and {label}",
                            "keep one row per image")
    if not corrected:
        raise DataError(f"{file} corrects no label: its 'corrected' column is empty",
                        "fill in the right class for the images you have reviewed")
    return corrected


def cache_dir() -> Path:
    """Folder for derived files (decoded images, hashes, exported models): $BRAINTUMOR_CACHE or ~/.cache/braintumor."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "braintumor"


def _decode(path: Path, preprocess: Preprocess) -> np.ndarray | str:
    try:
        return preprocess(read_image(path))
    except ImageError as exc:
        return exc.message.split(": ", 1)[-1]


def decode_all(
    paths: list[Path],
    preprocess: Preprocess,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decoding",
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode and preprocess images in parallel threads.

    Returns
    -------
    images : numpy.ndarray
        ``N x S x S x 3`` uint8, one row per readable file.
    kept : list of int
        Index into `paths` of each row of `images`.
    skipped : list of (str, str)
        ``(path, reason)`` for each file that could not be read.
    """
    size = preprocess.image_size
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _decode(p, preprocess), paths, chunksize=1)
        for i, result in enumerate(tqdm(results, total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)):
            if isinstance(result, str):
                skipped.append((str(paths[i]), result))
            else:
                images[len(kept)] = result
                kept.append(i)
    return images[: len(kept)], kept, skipped


def load_images(dataset: Dataset, preprocess: Preprocess, cache: bool = True, progress: bool = True) -> tuple[np.ndarray, Dataset]:
    """Decode every image of `dataset` once, with an on-disk cache keyed by data and preprocessing.

    Returns the ``N x S x S x 3`` uint8 images and the dataset restricted to readable files, its
    `skipped` list extended by the files that failed to decode.
    """
    key = hashlib.sha256((dataset.fingerprint() + repr(sorted(preprocess.to_dict().items()))).encode()).hexdigest()[:24]
    cache_file = cache_dir() / f"images-{key}.npz"
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                images, kept = npz["images"], npz["kept"]
                bad_paths, bad_reasons = list(npz["bad_paths"]), list(npz["bad_reasons"])
            usable = dataset.subset(kept)
            usable.skipped = dataset.skipped + list(zip(map(str, bad_paths), map(str, bad_reasons)))
            return images, usable
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache is rebuilt below
    images, kept, bad = decode_all(dataset.paths, preprocess, progress=progress)
    usable = dataset.subset(kept)
    usable.skipped = dataset.skipped + bad
    if cache:
        remove_temporaries(cache_file.parent)  # a killed run's half-written cache
        try:  # atomically, under a name of its own: runs decoding the same data at once do not mix
            atomic_write(cache_file, lambda handle: np.savez(
                handle,
                images=images,
                kept=np.asarray(kept, dtype=np.int64),
                bad_paths=np.asarray([p for p, _ in bad], dtype=str),
                bad_reasons=np.asarray([r for _, r in bad], dtype=str),
            ))
        except OutputError:
            pass  # caching is an optimisation; a read-only home must not fail the run
    return images, usable
