"""``braintumor compare``: the same training configuration under ``original``, ``dedup`` and
``official`` on the same data, side by side.

The table shows, for each protocol, the test accuracy and macro-F1 with their 95% confidence
intervals, the ROC-AUC and calibration error, and how many test images have a copy or near-copy
in the training or validation part: the images on which the test measures memory rather than
generalisation. The gap between ``original`` and ``dedup`` is the part of the headline accuracy
that comes from duplicates.

With several collections (``data`` a list), ``cross`` joins the default protocols: trained on all
collections but the test collection, tested on its images without a copy in them; and every
row gives each collection's own test accuracy beside the pooled one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from braintumor.data.dataset import scan
from braintumor.errors import DataError
from braintumor.files import locked_folder, write_json, write_text
from braintumor.data.protocols import PROTOCOLS

DEFAULT_PROTOCOLS = ("original", "dedup", "official")


def default_protocols(data) -> tuple[str, ...]:
    """The protocols `compare` runs unless told: ``cross`` too when `data` is several collections."""
    return DEFAULT_PROTOCOLS + (("cross",) if isinstance(data, (list, tuple)) and len(data) > 1 else ())


def leaked_test_images(split_file: Path, group_of: dict[str, int]) -> int:
    """Test images of a run (its ``split.json``) whose near-duplicate group also has a member
    in the run's training or validation part."""
    split = json.loads(Path(split_file).read_text())
    seen = {group_of[p] for p in split["train"] + split["val"] if p in group_of}
    return sum(group_of.get(p) in seen for p in split["test"])


def compare(config, protocols: tuple[str, ...] = DEFAULT_PROTOCOLS) -> dict:
    """Train and evaluate `config` (a `TrainConfig`) under each protocol; runs go to
    ``config.out/<protocol>``, the table to ``config.out/comparison.{md,json}``.

    ``official`` is left out, with a note, for data without Training/Testing folders, and
    ``cross`` for data of one collection.

    Returns
    -------
    dict
        rows (one per protocol) and report (path of comparison.md).
    """
    from braintumor.data.duplicates import duplicate_groups

    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise DataError(f"unknown protocols {unknown or 'none'}", f"choose from {', '.join(PROTOCOLS)}")
    dataset = scan(config.data, config.class_map)
    groups = duplicate_groups(dataset, progress=config.progress)
    group_of = {str(p): int(g) for p, g in zip(dataset.paths, groups)}
    has_folders = {"Training", "Testing"} <= set(dataset.splits)
    # The comparison's folder is locked while it runs, each protocol's run folder by its `train` too.
    with locked_folder(config.out) as out:
        rows = [_compare_row(config, protocol, has_folders, group_of, len(dataset.collections)) for protocol in protocols]
        result = {"data": str(dataset.root), "collections": list(dataset.collections), "seed": config.seed, "rows": rows}
        result["report"] = str(write_comparison(result, out))
    return result


def _compare_row(config, protocol: str, has_folders: bool, group_of: dict[str, int], collections: int) -> dict:
    """Train and evaluate `config` under `protocol` into ``config.out/<protocol>``: a row of the table."""
    from braintumor.evaluation.evaluator import evaluate
    from braintumor.training.trainer import train

    if protocol == "official" and not has_folders:
        return {"protocol": protocol, "skipped": "the data has no Training/ and Testing/ folders"}
    if protocol == "cross" and collections < 2:
        return {"protocol": protocol, "skipped": "the data is one collection (give --data once per collection)"}
    run = train(replace(config, protocol=protocol, out=str(Path(config.out) / protocol), folds=0, fold=0))
    m = evaluate(run / "model.safetensors", config.data, progress=config.progress)
    return {
        "protocol": protocol,
        "run": str(run),
        "split_sizes": json.loads((run / "test_metrics.json").read_text())["split sizes"],
        "n": m["n"],
        "accuracy": m["accuracy"],
        "accuracy_ci": m["accuracy_ci"],
        "macro_f1": m["macro_f1"],
        "macro_f1_ci": m["macro_f1_ci"],
        "macro_roc_auc": m["macro_roc_auc"],
        "ece": m["ece"],
        "leaked_test_images": leaked_test_images(run / "split.json", group_of),
        "testing_folder": _testing_folder(m, protocol),
        "by_collection": {name: {k: part[k] for k in ("n", "correct", "accuracy")}
                          for name, part in (m.get("by_collection") or {}).items()},
        **({"cross_collection": m["cross_collection"]} if "cross_collection" in m else {}),
    }


def _testing_folder(metrics: dict, protocol: str) -> dict | None:
    """Images, right answers and accuracy on the test images from the Testing folder, or None."""
    if protocol == "official":
        return {"n": metrics["n"], "correct": metrics["correct"], "accuracy": metrics["accuracy"]}
    part = metrics.get("by_source", {}).get("Testing")
    return None if part is None else {k: part[k] for k in ("n", "correct", "accuracy")}


def _collection_cell(row: dict) -> str:
    cross = row.get("cross_collection")
    if cross:
        return (f"{cross['tested_on']} (trained on {', '.join(cross['trained_on'])}; "
                f"{cross['left_out_with_copy']} images with a copy left out)")
    parts = row.get("by_collection") or {}
    return "; ".join(f"{name} {_pct(p['accuracy'])} ({p['correct']}/{p['n']})" for name, p in parts.items()) or "–"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def write_comparison(result: dict, out: Path) -> Path:
    """Write comparison.json and comparison.md into `out`."""
    write_json(out / "comparison.json", result)
    lines = [
        f"# Protocols compared on {result['data']} (seed {result['seed']})",
        "",
        "Same training configuration; only which images are trained, validated and tested on differs.",
        "",
        "| protocol | train / val / test | test accuracy (95% CI) | macro-F1 (95% CI) | macro ROC-AUC | ECE "
        "| test images with a (near-)copy in train/val | on the Testing folder's test images | by collection |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['protocol']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        folder = r.get("testing_folder")
        folder = "–" if folder is None else f"{_pct(folder['accuracy'])} ({folder['correct']}/{folder['n']})"
        lo, hi = r["accuracy_ci"]
        flo, fhi = r["macro_f1_ci"]
        auc = "–" if r["macro_roc_auc"] is None else f"{r['macro_roc_auc']:.4f}"
        lines.append(
            f"| [{r['protocol']}]({r['protocol']}/report.md) | {r['split_sizes']} | **{_pct(r['accuracy'])}** "
            f"({_pct(lo)}–{_pct(hi)}) | {r['macro_f1']:.4f} ({flo:.4f}–{fhi:.4f}) | {auc} | {r['ece']:.4f} | "
            f"{r['leaked_test_images']} of {r['n']} | {folder} | {_collection_cell(r)} |"
        )
    lines += [
        "",
        "- `original`: Training and Testing pooled, random stratified test split: copies of a test image can be in the "
        "training part, so part of its accuracy is memory.",
        "- `dedup`: the same, but every group of exact and near-duplicate images stays on one side of the split.",
        "- `official`: trained on Training/, tested on Testing/, a separate and harder test set.",
        "- `cross` (several collections): trained on all but one collection, tested on that one's images that have "
        "no copy in the others.",
        "- 'On the Testing folder' scores only the test images from the Testing folder: under `original` and `dedup` a "
        "minority of the test set, under `official` all of it. 'By collection' scores each collection's test images.",
        "",
        "Confidence intervals: percentile bootstrap of each test set, near-duplicate copies within it resampled together. "
        "Near-duplicates: see `braintumor audit`.",
    ]
    return write_text(out / "comparison.md", "\n".join(lines) + "\n")
