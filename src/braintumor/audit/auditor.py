"""``braintumor audit``: how many images of a dataset are copies of each other, and where.

Finds byte-identical, pixel-identical and near-duplicate images (see `braintumor.data.duplicates`),
within and across the Training/Testing folders, and label conflicts: one image filed under two
classes. It also checks whether the files' width, height and compression alone predict the class
(`braintumor.audit.shortcuts`). Writes ``audit.json`` (every group with its files), ``audit.md`` (counts
per class and per split pair) and ``contact_sheet.png`` (example groups side by side).

Given several collections (``data`` a list), it pools them and reports what spans them: the
images of each collection with a copy in another, the groups each pair of collections shares,
and label conflicts between collections (one image filed under two classes by two collections).

With ``--external OTHER`` it also checks another folder, such as an external test set, for copies
of the dataset's images (`braintumor.data.duplicates.copies_in`) and lists them in ``against.csv``
with example pairs in ``against_sheet.png``: what a model trained on the dataset would have seen.
"""

from __future__ import annotations

import csv
import io
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from braintumor.data.dataset import Dataset, data_folders, scan
from braintumor.data.duplicates import (CROSS_COLLECTION_THRESHOLD, DEFAULT_THRESHOLD, check_threshold, connected_groups, copies_in, equal_pairs, group_ids,
                         hash_dataset, summarise_copies)
from braintumor.errors import DataError
from braintumor.files import locked_folder, write_json, write_text
from braintumor.metrics.figures import save_figure
from braintumor.data.imageio import read_image
from braintumor.audit.shortcuts import file_features, shortcut_check

LEVELS = {
    "byte": "byte-identical files",
    "pixel": "pixel-identical images",
    "near": "near-duplicate groups (pixel-identical included)",
}
_SPLIT_ORDER = ("Training", "Testing", "")


def _split_key(splits: set[str]) -> str:
    """'Training', 'Testing', 'Training+Testing', or 'all' for a folder without split folders."""
    names = [s or "all" for s in _SPLIT_ORDER if s in splits]
    return "+".join(names)


def _split_order(key: str) -> tuple[int, list[int]]:
    """Sort split keys: single splits first, in the order Training, Testing, all."""
    order = [s or "all" for s in _SPLIT_ORDER]
    return key.count("+"), [order.index(name) for name in key.split("+")]


def summarise_groups(ids: np.ndarray, dataset: Dataset, keep: np.ndarray) -> dict:
    """Counts for the groups of two or more images among the rows where `keep` is true.

    Returns groups, files (images in such groups), redundant (files - groups: copies a clean
    dataset would not hold), label_conflicts (groups spanning two or more classes), per_class
    {class: {groups, files}} and per_split {split key: groups}.
    """
    ids = np.where(keep, ids, -1)
    sizes = np.bincount(ids[ids >= 0], minlength=ids.max() + 1) if (ids >= 0).any() else np.zeros(0, int)
    multi = np.flatnonzero(sizes >= 2)
    per_class = {c: {"groups": 0, "files": 0} for c in dataset.classes}
    per_split: dict[str, int] = {}
    conflicts = 0
    for g in multi:
        members = np.flatnonzero(ids == g)
        labels = set(dataset.labels[members].tolist())
        conflicts += len(labels) > 1
        for label in labels:
            row = per_class[dataset.classes[label]]
            row["groups"] += 1
            row["files"] += int((dataset.labels[members] == label).sum())
        key = _split_key({dataset.splits[m] for m in members})
        per_split[key] = per_split.get(key, 0) + 1
    files = int(sizes[multi].sum())
    return {
        "groups": int(len(multi)),
        "files": files,
        "redundant": files - int(len(multi)),
        "label_conflicts": int(conflicts),
        "per_class": per_class,
        "per_split": dict(sorted(per_split.items(), key=lambda kv: _split_order(kv[0]))),
    }


def summarise_collections(ids: np.ndarray, dataset: Dataset, keep: np.ndarray) -> dict:
    """What the collections of a pooled dataset share, at one level of grouping (`ids`).

    Returns
    -------
    dict
        ``per_collection``: {name: {images, with_a_copy_elsewhere}} (images with a copy in another
        collection); ``shared_groups``: {"a+b": groups with members in both}; ``label_conflicts``:
        groups spanning collections whose members carry two or more classes.
    """
    ids = np.where(keep, ids, -1)
    names = dataset.collections
    order = np.argsort(ids, kind="stable")
    ids_sorted = ids[order]
    starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
    copied = np.zeros(len(ids), dtype=bool)
    shared: dict[str, int] = {}
    conflicts = 0
    for members in np.split(order, starts[1:]):
        if len(members) < 2 or ids[members[0]] < 0:
            continue
        sources = np.unique(dataset.sources[members])
        if len(sources) < 2:
            continue
        copied[members] = True
        conflicts += len(np.unique(dataset.labels[members])) > 1
        for a in range(len(sources)):
            for b in range(a + 1, len(sources)):
                key = f"{names[sources[a]]}+{names[sources[b]]}"
                shared[key] = shared.get(key, 0) + 1
    per_collection = {name: {"images": int(((dataset.sources == k) & keep).sum()),
                             "with_a_copy_elsewhere": int((copied & (dataset.sources == k)).sum())}
                      for k, name in enumerate(names)}
    return {"per_collection": per_collection, "shared_groups": shared, "label_conflicts": int(conflicts)}


def _group_records(ids: np.ndarray, dataset: Dataset, pixel_digest: np.ndarray, keep: np.ndarray) -> list[dict]:
    """One record per near-duplicate group of two or more images, largest first."""
    records = []
    ids = np.where(keep, ids, -1)
    for g in np.unique(ids[ids >= 0]):
        members = np.flatnonzero(ids == g)
        if len(members) < 2:
            continue
        classes = sorted({dataset.classes[dataset.labels[m]] for m in members})
        splits = {dataset.splits[m] for m in members}
        records.append(
            {
                "id": int(g),
                "classes": classes,
                "splits": _split_key(splits),
                "label_conflict": len(classes) > 1,
                "cross_split": len(splits) > 1,
                "collections": sorted({dataset.collections[dataset.sources[m]] for m in members}),
                "pixel_identical": len({pixel_digest[m] for m in members}) == 1,
                "files": [
                    {
                        "path": dataset.paths[m].relative_to(dataset.root).as_posix(),
                        "class": dataset.classes[dataset.labels[m]],
                        "split": dataset.splits[m] or "all",
                        "collection": dataset.collections[dataset.sources[m]],
                        "pixels": str(pixel_digest[m])[:12],
                    }
                    for m in members
                ],
            }
        )
    records.sort(key=lambda r: (-len(r["files"]), r["id"]))
    return records


def audit(
    data: str | Path,
    threshold: int = DEFAULT_THRESHOLD,
    out: str | Path | None = None,
    class_map: dict[str, str] | None = None,
    progress: bool = True,
    cache: bool = True,
    against: str | Path | None = None,
) -> dict:
    """Find duplicate images in a dataset folder and write the audit report.

    Parameters
    ----------
    data : path or list of paths
        Dataset folder, laid out as for training; several: collections audited as one pool, with
        what they share (`summarise_collections`).
    threshold : int
        Near-duplicate Hamming threshold in bits, 0..24.
    out : path, optional
        Report folder (created); no files are written when None.
    cache : bool
        Reuse and store image hashes in the cache folder (``$BRAINTUMOR_CACHE``).
    against : path, optional
        Another labelled folder (not inside `data`, nor holding it) to check for copies of
        `data`'s images (`copies_against`); `class_map` applies to it too.

    Returns
    -------
    dict
        The content of ``audit.json``, plus ``report`` (path of audit.md) when written.

    Raises
    ------
    DataError
        When the folder holds no images, none can be read, or `threshold` is out of range;
        when `against` overlaps `data`.
    """
    threshold = check_threshold(threshold)
    if against is not None:
        for folder in data_folders(data):
            _check_apart(folder, Path(against))
    with locked_folder(out) if out is not None else nullcontext():  # (a report folder is one command's at a time)
        return _audit(data, threshold, out, class_map, progress, cache, against)


def _audit(data, threshold: int, out, class_map, progress: bool, cache: bool, against) -> dict:
    start = time.time()
    dataset = scan(data, class_map)
    hashes = hash_dataset(dataset, cache=cache, progress=progress)
    keep = hashes.readable
    if not keep.any():
        raise DataError(
            f"none of the {len(dataset)} images under {dataset.root} could be read",
            f"first failure: {dataset.paths[0]}: {hashes.errors[0]}",
        )
    skipped = list(dataset.skipped) + [(str(p), str(e)) for p, e in zip(dataset.paths, hashes.errors) if e]
    ids = {
        "byte": connected_groups(len(dataset), *equal_pairs(hashes.file_digest)),
        "pixel": connected_groups(len(dataset), *equal_pairs(hashes.pixel_digest)),
        "near": group_ids(hashes, threshold, dataset.sources),
    }
    levels = {name: summarise_groups(level_ids, dataset, keep) for name, level_ids in ids.items()}
    across = ({name: summarise_collections(level_ids, dataset, keep) for name, level_ids in ids.items()}
              if len(dataset.collections) > 1 else None)
    groups = _group_records(ids["near"], dataset, hashes.pixel_digest, keep)
    features = file_features(hashes)
    shortcut = shortcut_check(features, dataset.labels, ids["near"], dataset.classes)
    result = {
        "root": str(dataset.root),
        "images": len(dataset),
        "readable": int(keep.sum()),
        "threshold": threshold,
        "counts": dataset.counts(),
        "levels": levels,
        **({"collections": across, "cross_collection_threshold": max(threshold, CROSS_COLLECTION_THRESHOLD)} if across else {}),
        "near_groups_not_pixel_identical": sum(not g["pixel_identical"] for g in groups),
        "shortcut": shortcut,
        "seconds": round(time.time() - start, 1),
        "groups": groups,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }
    if against is not None:
        result["against"] = copies_against(dataset, hashes, against, threshold, class_map, cache, progress)
        result["seconds"] = round(time.time() - start, 1)
    if out is not None:
        result["report"] = str(write_audit(result, Path(out)))
    return result


def _check_apart(data: Path, other: Path) -> None:
    a, b = data.resolve(), other.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise DataError(f"--external {other} overlaps the audited folder {data}: its images would be copies of themselves",
                        "pass two separate folders, e.g. audit -d DATA/Training --external DATA/Testing")


def copies_against(dataset: Dataset, hashes, other: str | Path, threshold: int = DEFAULT_THRESHOLD,
                   class_map: dict[str, str] | None = None, cache: bool = True, progress: bool = True) -> dict:
    """Which images of the folder `other` have a copy in `dataset` (hashed as `hashes`).

    Returns
    -------
    dict
        ``root``, ``images``, ``readable``; ``with_a_copy`` and its split ``per_level`` (byte,
        pixel, near: the strictest level each image has a copy at) and ``per_class`` (of
        `other`'s labels); ``label_conflicts``, copies filed under another class than the image
        they copy; ``copies``, one record per copy (path, class, level, the copy in `dataset`
        with its class, their perceptual-hash distance in bits); ``skipped``.
    """
    found_in = scan(other, class_map)
    other_hashes = hash_dataset(found_in, cache=cache, progress=progress)
    if not other_hashes.readable.any():
        raise DataError(f"none of the {len(found_in)} images under {found_in.root} could be read",
                        f"first failure: {found_in.paths[0]}: {other_hashes.errors[0]}")
    found = copies_in(other_hashes, hashes, threshold)
    level, match, labels = found["level"], found["match"], found_in.labels
    copy_label = np.where(match >= 0, dataset.labels[np.maximum(match, 0)], -1)
    classes = dataset.classes
    copies = [{"path": found_in.paths[k].relative_to(found_in.root).as_posix(), "class": classes[labels[k]],
               "level": str(level[k]), "copy": dataset.paths[match[k]].relative_to(dataset.root).as_posix(),
               "copy_class": classes[copy_label[k]], "hash_bits": int(found["bits"][k])} for k in np.flatnonzero(level != "")]
    return {
        "root": str(found_in.root),
        "readable": int(other_hashes.readable.sum()),
        **summarise_copies(level, labels, copy_label, classes),
        "copies": copies,
        "skipped": [{"path": p, "reason": r} for p, r in found_in.skipped]
                   + [{"path": str(p), "reason": str(e)} for p, e in zip(found_in.paths, other_hashes.errors) if e],
    }


def _against_lines(result: dict, out: Path) -> list[str]:
    """The report section of `copies_against`, with its CSV and example sheet written to `out`."""
    a = result["against"]
    levels = a["per_level"]
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=["path", "class", "level", "copy", "copy_class", "hash_bits"])
    w.writeheader()
    w.writerows(a["copies"])
    write_text(out / "against.csv", table.getvalue())
    lines = [f"## Images of {a['root']} with a copy here", "",
             f"{a['with_a_copy']} of its {a['readable']} readable images ({a['images']} in all) have a copy in "
             f"{result['root']}: "
             f"{levels['byte']} byte-identical, {levels['pixel']} pixel-identical, {levels['near']} near-duplicate; "
             f"{a['label_conflicts']} of them filed under another class than the image they copy. A model trained on "
             f"{result['root']} and tested on {a['root']} has seen these; "
             "[against.csv](against.csv) lists each with its copy and their hash distance in bits.", "",
             "| class | images | with a copy here |", "|---|---:|---:|"]
    lines += [f"| {c} | {v['images']} | {v['with_a_copy']} |" for c, v in a["per_class"].items()]
    pairs = _against_examples(a, result["root"])
    if pairs:
        plot_contact_sheet(pairs, Path("/"), out / "against_sheet.png", per_row=2)  # the pairs' paths are absolute
        lines += ["", "![copies and the images they copy](against_sheet.png)"]
    else:
        (out / "against_sheet.png").unlink(missing_ok=True)
    return lines + [""]


def _against_examples(a: dict, root: str, rows: int = 8) -> list[dict]:
    """Pairs for the sheet: label conflicts first, then the near copies farthest from their match
    (the ones a person would most want to see), then the rest."""
    order = sorted(a["copies"], key=lambda c: (c["class"] == c["copy_class"], c["level"] != "near", -c["hash_bits"]))
    pairs = []
    for c in order[:rows]:
        conflict = c["class"] != c["copy_class"]
        pairs.append({"id": len(pairs), "label_conflict": conflict, "pixel_identical": c["level"] != "near",
                      "caption": f"{'label conflict' if conflict else 'copy'}\n{c['level']}, {c['hash_bits']} bits",
                      "files": [
                          {"path": str((Path(a["root"]) / c["path"]).resolve()), "class": c["class"], "split": Path(a["root"]).name},
                          {"path": str((Path(root) / c["copy"]).resolve()), "class": c["copy_class"], "split": Path(root).name}]})
    return pairs


def write_audit(result: dict, out: Path) -> Path:
    """Write audit.json, contact_sheet.png and audit.md into `out`, each atomically, holding the
    folder's lock; returns audit.md's path."""
    with locked_folder(out):
        return _write_audit(result, out)


def _write_audit(result: dict, out: Path) -> Path:
    write_json(out / "audit.json", result)
    examples = pick_examples(result["groups"])
    if examples:
        plot_contact_sheet(examples, Path(result["root"]), out / "contact_sheet.png")
    else:  # an earlier audit's sheet would show groups this audit did not find
        (out / "contact_sheet.png").unlink(missing_ok=True)
    levels = result["levels"]
    classes = list(levels["near"]["per_class"])
    split_keys = sorted({k for lv in levels.values() for k in lv["per_split"]}, key=_split_order)
    lines = [
        f"# Duplicate audit of {result['root']}",
        "",
        f"- images: {result['images']} ({result['readable']} readable, {len(result['skipped'])} skipped)",
        f"- near-duplicate threshold: {result['threshold']} bits of 64 (pHash and dHash of the content box)",
        f"- time: {result['seconds']} s",
        "",
        "| level | groups | images in groups | redundant copies | label conflicts | "
        + " | ".join(f"groups in {k}" for k in split_keys) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(split_keys),
    ]
    for name, title in LEVELS.items():
        lv = levels[name]
        lines.append(
            f"| {title} | {lv['groups']} | {lv['files']} | {lv['redundant']} | {lv['label_conflicts']} | "
            + " | ".join(str(lv["per_split"].get(k, 0)) for k in split_keys) + " |"
        )
    lines += [
        "",
        f"{result['near_groups_not_pixel_identical']} near-duplicate groups hold images that are not pixel-identical "
        "(re-encoded, resized, cropped or brightness-changed copies, or neighbouring slices of one scan).",
        "",
        "A group whose images fall in both the training and the test part of a split lets the model be tested on "
        "images it was trained on. `--protocol dedup` keeps every near-duplicate group on one side.",
        "",
        "## Per class",
        "",
        "Images in groups (and number of groups) per class; a group with a label conflict counts for each of its classes.",
        "",
        "| class | " + " | ".join(LEVELS[name].split(" (")[0] for name in LEVELS) + " |",
        "|---|" + "---:|" * len(LEVELS),
    ]
    for c in classes:
        cells = [f"{levels[n]['per_class'][c]['files']} ({levels[n]['per_class'][c]['groups']})" for n in LEVELS]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if result.get("collections"):
        lines += ["", *_collection_lines(result["collections"], result["cross_collection_threshold"])]
    lines += ["", *_shortcut_lines(result["shortcut"])]
    conflicts = [g for g in result["groups"] if g["label_conflict"]]
    lines += ["", f"## Label conflicts: {len(conflicts)} groups", ""]
    for g in conflicts[:30]:
        kind = "pixel-identical" if g["pixel_identical"] else "near-duplicate"
        lines.append(f"- group {g['id']} ({kind}): " + ", ".join(f"`{f['path']}`" for f in g["files"]))
    if len(conflicts) > 30:
        lines.append(f"- … and {len(conflicts) - 30} more in [audit.json](audit.json)")
    if not conflicts:
        lines.append("None.")
    if examples:
        lines += ["", "## Examples", "", "![example groups](contact_sheet.png)", "",
                  "Every group with its files is listed in [audit.json](audit.json)."]
    if "against" in result:
        lines += ["", *_against_lines(result, out)]
    else:
        for stale in ("against.csv", "against_sheet.png"):  # an earlier audit's
            (out / stale).unlink(missing_ok=True)
    skipped = result["skipped"] + result.get("against", {}).get("skipped", [])
    lines += ["", f"## Skipped files: {len(skipped)}", ""]
    lines += [f"- `{s['path']}`: {s['reason']}" for s in skipped[:50]] or ["None."]
    return write_text(out / "audit.md", "\n".join(lines) + "\n")


def _collection_lines(across: dict, cross_threshold: int) -> list[str]:
    names = list(across["near"]["per_collection"])
    lines = [
        "## Across collections", "",
        "Images of each collection with a copy in another, at each level; a model trained on one and tested on another "
        "is tested on these from memory (`--protocol cross` leaves them out, `dedup` keeps each group on one side). "
        "Label conflicts: groups spanning collections whose images the collections file under different classes. "
        f"Between collections, images up to {cross_threshold} bits apart count as near-duplicates (a collection built "
        "from another re-crops and resizes its copies).", "",
        "| level | " + " | ".join(f"{n}: images with a copy elsewhere" for n in names) + " | groups shared | label conflicts |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for name, title in LEVELS.items():
        lv = across[name]
        cells = [f"{lv['per_collection'][n]['with_a_copy_elsewhere']} of {lv['per_collection'][n]['images']}" for n in names]
        shared = "; ".join(f"{k}: {v}" for k, v in lv["shared_groups"].items()) or "0"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {shared} | {lv['label_conflicts']} |")
    return lines


def _shortcut_lines(shortcut: dict) -> list[str]:
    lines = ["## Does the file alone give the class away?", ""]
    if "skipped" in shortcut:
        return lines + [f"Not checked: {shortcut['skipped']}."]
    lines += [
        f"A decision tree (depth {shortcut['depth']}) that sees only each file's width, height and bytes per pixel "
        f"predicts the class of **{shortcut['accuracy']:.1%}** of the {shortcut['images']} images "
        f"(± {shortcut['accuracy_std']:.1%} across {shortcut['folds']} group-aware folds); always guessing the "
        f"largest class scores {shortcut['majority']:.1%}.",
        "",
        "Far above that share, the class goes with the image's source (its size and compression), and a network "
        "can learn the source instead of the anatomy: its accuracy then holds on a random split of these data "
        "and falls on images from elsewhere. Recall per class: "
        + ", ".join(f"{c} {r:.0%}" for c, r in shortcut["recall"].items()) + ".",
        "",
        "The tree, fitted on all images:",
        "",
        "```",
        shortcut["rules"].rstrip(),
        "```",
    ]
    return lines


def pick_examples(groups: list[dict], rows: int = 10) -> list[dict]:
    """Up to `rows` groups for the contact sheet: label conflicts, then groups across splits,
    then near (not pixel-identical) groups, then the largest."""
    picked: list[dict] = []
    for wanted, limit in (
        (lambda g: g["label_conflict"], 3),
        (lambda g: g["cross_split"] and not g["pixel_identical"], 3),
        (lambda g: g["cross_split"], 2),
        (lambda g: not g["pixel_identical"], 3),
        (lambda g: True, rows),
    ):
        for g in [g for g in groups if wanted(g) and g not in picked][:limit]:
            if len(picked) < rows:
                picked.append(g)
    return picked


def plot_contact_sheet(groups: list[dict], root: Path, path: Path, per_row: int = 6, thumb: int = 128) -> None:
    """One row per group: up to `per_row` thumbnails captioned with class, split and file name
    (a group's ``caption``, if it has one, labels its row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(groups), per_row, figsize=(1.9 * per_row, 2.2 * len(groups)), dpi=90, squeeze=False)
    for row, group in zip(axes, groups):
        kind = "label conflict" if group["label_conflict"] else "identical" if group["pixel_identical"] else "near"
        row[0].set_ylabel(group.get("caption") or f"group {group['id']}\n{kind}, {len(group['files'])} images", fontsize=8)
        for ax, item in zip(row, group["files"] + [None] * per_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if item is None:
                if ax is not row[0]:  # the first axes keeps its label
                    ax.axis("off")
                continue
            img = Image.fromarray(read_image(root / item["path"]))
            img.thumbnail((thumb, thumb))
            ax.imshow(np.asarray(img))
            name = Path(item["path"]).name
            ax.set_title(f"{item['class']} · {item['split']}\n{name[:22]}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
