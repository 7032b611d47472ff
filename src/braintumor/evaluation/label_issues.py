"""Images whose label is likely wrong, found by confident learning on out-of-sample predictions.

An error of a model on an image it never trained on is one of two things: the model is wrong, or
the label is. Confident learning (Northcutt, Jiang and Chuang, JAIR 2021, as implemented by the
`cleanlab` package) tells them apart statistically. From the predicted probabilities it estimates
how many images given each class truly belong to each other class (the *joint* of given and true
labels), and it flags the images whose given label is least likely, as many per class pair as that
estimate allows. The probabilities must be out-of-sample: the test folds of
``braintumor train --folds K`` score every image once, each by the model that did not train on it;
the test splits of separate runs score a part of the data.

Flagged images are candidates for an expert's review, not proven errors. The estimated share of
wrong labels says how far a test set drawn from the same data can be trusted: a model that knows
the true class of every image would still disagree with that share of its labels, unless copies of
a mislabelled image sit in both the training and the test part (as in a random split of this
data), where a model can learn the wrong label.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintumor.data.dataset import data_root
from braintumor.errors import BrainTumorError
from braintumor.files import locked_folder, write_json, write_text
from braintumor.metrics.stats import resample_weights

MIN_PER_CLASS = 5
"""Fewest scored images of a class for its thresholds to mean anything."""


@dataclass
class OutOfSample:
    """Each image's probabilities from a model that did not train on it."""

    paths: list[Path]
    labels: np.ndarray
    probs: np.ndarray
    """``N x C`` calibrated probabilities (averaged where several runs tested an image)."""
    sources: list[str]
    """``"Training"``, ``"Testing"`` or ``""``: the dataset's split folder of each image."""
    classes: list[str]
    root: Path
    runs: list[str]
    protocols: list[str]
    """The protocol each run was split under."""


def run_folders(path: str | Path) -> list[Path]:
    """The run folders that `path` stands for: itself if it holds ``model.safetensors``, else the
    fold runs of the cross-validation written there (``crossval.json``)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return [path]
    listing = path / "crossval.json"
    if listing.is_file():
        runs = [Path(r) for r in json.loads(listing.read_text()).get("runs", [])]
        if not runs:
            raise BrainTumorError(f"{listing} lists no fold runs", "re-run the cross-validation: braintumor train --folds K")
        # the folds sit beside crossval.json; the listing may hold paths relative to another directory
        return [r if (r / "model.safetensors").is_file() else path / r.name for r in runs]
    raise BrainTumorError(
        f"{path} is neither a run folder (no model.safetensors) nor a cross-validation (no crossval.json)",
        "pass what braintumor train --out wrote, e.g. a folder made with --folds 5",
    )


def out_of_sample_predictions(runs: list[str | Path], data: str | Path | None = None, progress: bool = True) -> OutOfSample:
    """Score each run's test split with its own checkpoint, and pool them by image.

    Parameters
    ----------
    runs : list of path
        Run folders or cross-validation folders (see `run_folders`).
    data : path, optional
        The dataset, if it moved since training (default: each run's recorded data folder).
    progress : bool
        Show progress bars.
    """
    from braintumor.evaluation.evaluator import predict_test_split

    folders = [f for r in runs for f in run_folders(r)]
    missing = [str(f) for f in folders if not (f / "model.safetensors").is_file()]
    if missing:
        raise BrainTumorError(f"no model.safetensors in {', '.join(missing)}", "was a fold run deleted or moved?")
    sums: dict[Path, np.ndarray] = {}
    count: dict[Path, int] = {}
    label: dict[Path, int] = {}
    source: dict[Path, str] = {}
    classes, root, protocols = None, None, []
    for folder in folders:
        test = predict_test_split(folder / "model.safetensors", data, progress=progress, groups=False)
        protocols.append(test.context["protocol"])
        if classes is None:
            classes, root = list(test.info.classes), data_root(test.data)
        elif list(test.info.classes) != classes:
            raise BrainTumorError(f"{folder} predicts classes {list(test.info.classes)}, not {classes}",
                                  "pool only runs trained on the same classes")
        for path, y, p, s in zip(test.paths, test.labels, test.probs, test.sources):
            if path in label and label[path] != y:
                raise BrainTumorError(f"{path} has two labels in the runs given", "pool only runs of the same dataset and class map")
            sums[path] = sums.get(path, 0) + p
            count[path] = count.get(path, 0) + 1
            label[path], source[path] = int(y), s
    paths = sorted(sums)
    probs = np.stack([sums[p] / count[p] for p in paths])
    return OutOfSample(paths, np.array([label[p] for p in paths]), probs, [source[p] for p in paths], classes, root,
                       [str(f) for f in folders], protocols)


def leak_warnings(protocols: list[str]) -> list[str]:
    """Why the probabilities of runs split under `protocols` may not be out-of-sample: only
    ``dedup`` keeps every copy of a test image out of the training part."""
    leaky = sorted(set(protocols) - {"dedup"})
    if not leaky:
        return []
    return [f"some runs were split under {' and '.join(leaky)}, which can leave copies of a test image in the training "
            "part: their probabilities are not fully out-of-sample, and a wrong label with a trained copy goes "
            "unflagged; prefer --protocol dedup"]


def find_label_issues(labels, probs, classes: list[str], sources: list[str] | None = None, groups=None,
                      resamples: int = 1000, seed: int = 0) -> dict:
    """Confident learning on out-of-sample probabilities.

    Parameters
    ----------
    labels : array of int, shape (N,)
        Given class index of each image.
    probs : array, shape (N, C)
        Out-of-sample predicted probabilities; rows sum to 1.
    classes : list of str
        The C class names.
    sources : list of str, optional
        A group name for each image (the dataset's split folder) to count issues by.
    groups : array, optional
        Near-duplicate group of each image: the interval of the estimate resamples whole groups
        (copies are one case). None resamples single images.
    resamples, seed : int
        Bootstrap resamples of the estimate's 95% interval (0: no interval), and their seed.

    Returns
    -------
    dict
        ``n``, ``accuracy`` (of the probabilities' argmax against the given labels),
        ``estimated_label_errors`` and its ``estimated_error_rate`` (from cleanlab's estimate of the
        joint of given and true labels) with their 95% bootstrap intervals
        ``estimated_label_errors_ci`` and ``estimated_error_rate_ci`` (None without resamples),
        ``joint`` (that estimate in images, given class by true
        class), ``issues`` (indices of the flagged images, least likely label first),
        ``label_quality`` (each image's probability of its given label, the ranking score),
        ``per_class`` and ``per_source`` counts of images, model errors and flagged images,
        and ``errors_flagged`` (how many of the model's errors are flagged).
    """
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues as cleanlab_issues

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must have shape (N, {len(classes)}) for classes {classes}, got {probs.shape}")
    if labels.shape != (len(probs),):
        raise ValueError(f"labels must have one entry per row of probs ({len(probs)}), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes):
        raise ValueError(f"labels must be class indices 0..{len(classes) - 1}")
    if not np.allclose(probs.sum(1), 1, atol=1e-4) or (probs < 0).any():
        raise ValueError("probs must be probabilities: non-negative, each row summing to 1")
    counts = np.bincount(labels, minlength=len(classes))
    few = [f"{c} ({n})" for c, n in zip(classes, counts) if n < MIN_PER_CLASS]
    if few:
        raise BrainTumorError(
            f"too few scored images to find label issues: {', '.join(few)}; at least {MIN_PER_CLASS} of every class are needed",
            "score more images: cross-validate (braintumor train --folds 5) or pass more runs",
        )
    issues = cleanlab_issues(labels, probs, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence", n_jobs=1)
    joint = estimate_joint(labels, probs) * len(labels)
    predicted = probs.argmax(1)
    flagged = np.zeros(len(labels), bool)
    flagged[issues] = True
    wrong = predicted != labels

    def tally(at: np.ndarray) -> dict:
        return {"n": int(at.sum()), "model_errors": int((wrong & at).sum()), "flagged": int((flagged & at).sum())}

    estimated = float(len(labels) - np.trace(joint))
    rate_ci = _error_rate_interval(labels, probs, len(classes), groups, resamples, seed)
    return {
        "n": int(len(labels)),
        "accuracy": float((~wrong).mean()),
        "estimated_label_errors": estimated,
        "estimated_label_errors_ci": None if rate_ci is None else [r * len(labels) for r in rate_ci],
        "estimated_error_rate": estimated / len(labels),
        "estimated_error_rate_ci": rate_ci,
        "joint": {g: {t: float(joint[i, j]) for j, t in enumerate(classes)} for i, g in enumerate(classes)},
        "issues": [int(i) for i in issues],
        "label_quality": probs[np.arange(len(labels)), labels].tolist(),
        "errors_flagged": int((wrong & flagged).sum()),
        "model_errors": int(wrong.sum()),
        "per_class": {c: tally(labels == i) for i, c in enumerate(classes)},
        "per_source": {} if sources is None else {s or "(no folder)": tally(np.asarray(sources, dtype=object) == s)
                                                  for s in sorted(set(sources))},
    }


def _error_rate_interval(labels: np.ndarray, probs: np.ndarray, n_classes: int, groups, resamples: int,
                         seed: int) -> list[float] | None:
    """95% percentile-bootstrap interval of the estimated share of wrong labels: images (or whole
    near-duplicate groups) drawn with replacement, the joint re-estimated on each resample. It
    covers the chance of having scored this sample of images, not the variation between models."""
    from cleanlab.count import estimate_joint

    if not resamples:
        return None
    rates = []
    for weights in resample_weights(len(labels), resamples, seed, groups):
        at = np.repeat(np.arange(len(labels)), weights)
        if len(np.unique(labels[at])) < n_classes:
            continue  # a resample without some class has no estimate for it
        rates.append(1.0 - np.trace(estimate_joint(labels[at], probs[at])))
    return [float(v) for v in np.percentile(rates, [2.5, 97.5])] if rates else None


def label_issues(runs: list[str | Path], data: str | Path | None = None, out: str | Path | None = None,
                 progress: bool = True, sheet: int = 48) -> dict:
    """Find likely label errors among the out-of-sample images of `runs` and write a report.

    `out` (default: ``label_issues`` in the first run folder) receives ``label_issues.md``,
    ``label_issues.json``, ``label_issues.csv`` (every flagged image, for review) and
    ``label_issues.png`` (the first `sheet` flagged images). Returns the JSON's content with
    ``report`` added.
    """
    if sheet < 0:
        raise BrainTumorError(f"sheet={sheet} is negative", "give the number of flagged images to show, 0 for none")
    out = Path(out) if out else Path(runs[0]) / "label_issues"
    with locked_folder(out):  # (a report folder is one command's at a time)
        return _label_issues(runs, data, out, progress, sheet)


def _label_issues(runs, data, out: Path, progress: bool, sheet: int) -> dict:
    from braintumor.data.duplicates import file_groups

    scored = out_of_sample_predictions(runs, data, progress=progress)
    groups = file_groups(scored.paths, progress=progress)  # copies are resampled together in the interval
    found = find_label_issues(scored.labels, scored.probs, scored.classes, scored.sources, groups)
    result = {
        "runs": scored.runs,
        "data": str(scored.root),
        "classes": scored.classes,
        "warnings": leak_warnings(scored.protocols),
        **{k: v for k, v in found.items() if k not in ("issues", "label_quality")},
        "issues": [_issue_row(scored, found, rank, i) for rank, i in enumerate(found["issues"], 1)],
    }
    result["report"] = str(write_label_issues(result, out, sheet))
    return result


def _issue_row(scored: OutOfSample, found: dict, rank: int, i: int) -> dict:
    path = scored.paths[i]
    try:
        shown = str(path.relative_to(scored.root))
    except ValueError:
        shown = str(path)
    p = scored.probs[i]
    suggested = int(p.argmax())
    return {
        "rank": rank,
        "path": shown,
        "source": scored.sources[i],
        "label": scored.classes[scored.labels[i]],
        "suggested": scored.classes[suggested],
        "p_label": round(float(found["label_quality"][i]), 4),
        "p_suggested": round(float(p[suggested]), 4),
    }


def write_label_issues(result: dict, out: Path, sheet: int = 48) -> Path:
    """Write label_issues.{json,csv,md,png} into `out`, each atomically, holding the folder's
    lock; returns the Markdown report's path."""
    with locked_folder(out):
        return _write_label_issues(result, out, sheet)


def _write_label_issues(result: dict, out: Path, sheet: int) -> Path:
    from braintumor.metrics.figures import plot_thumbnails
    from braintumor.data.imageio import read_image

    write_json(out / "label_issues.json", result)
    # `corrected` is left empty for a reviewer to fill in; `train --relabel` then learns from it.
    columns = ["rank", "path", "source", "label", "suggested", "p_label", "p_suggested", "corrected"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    writer.writerows({**row, "corrected": ""} for row in result["issues"])
    write_text(out / "label_issues.csv", table.getvalue())
    shown = result["issues"][:sheet]
    if shown:
        from PIL import Image

        thumbs = []
        for row in shown:
            img = Image.fromarray(read_image(Path(result["data"]) / row["path"]))
            img.thumbnail((128, 128))
            thumbs.append(np.asarray(img))
        captions = [f"#{r['rank']} {r['source']} · {Path(r['path']).name[:14]}\n{r['label']} → {r['suggested']} {r['p_suggested']:.2f}"
                    for r in shown]
        plot_thumbnails(thumbs, captions, out / "label_issues.png")
    else:  # an earlier report's sheet would show other flags than this report's
        (out / "label_issues.png").unlink(missing_ok=True)
    return write_text(out / "label_issues.md", _markdown(result, len(shown)))


def _interval_text(result: dict) -> str:
    ci = result.get("estimated_label_errors_ci")
    if not ci:
        return ""
    rate = result["estimated_error_rate_ci"]
    return (f", 95% CI {ci[0]:.0f}–{ci[1]:.0f} ({rate[0]:.1%}–{rate[1]:.1%}; a bootstrap over the scored images, "
            "copies resampled together)")


def _markdown(result: dict, shown: int) -> str:
    classes = result["classes"]
    n = result["n"]
    lines = [
        "# Likely label errors (confident learning on out-of-sample predictions)",
        "",
        f"{n} images of `{result['data']}`, each scored by a model that did not train on it "
        f"({len(result['runs'])} run{'s' if len(result['runs']) != 1 else ''}). Accuracy against the given labels: "
        f"{result['accuracy']:.2%} ({result['model_errors']} errors).",
        "",
        f"- Estimated wrong labels: **{result['estimated_label_errors']:.0f} ({result['estimated_error_rate']:.1%})**"
        + _interval_text(result) + ". A model that knew every image's true class would disagree with about this share "
        "of the labels.",
        f"- Flagged for review: **{len(result['issues'])}** images; {result['errors_flagged']} of the model's "
        f"{result['model_errors']} errors are among them.",
        "- Flagged images are candidates for an expert's review, not proven errors: the estimate is only as good "
        "as the model's probabilities.",
        *[f"- **Warning:** {w}." for w in result["warnings"]],
        "",
        "## Estimated images by given and true class",
        "",
        "| given \\ true | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for g in classes:
        lines.append(f"| {g} | " + " | ".join(f"{result['joint'][g][t]:.1f}" for t in classes) + " |")
    for title, table in (("class", result["per_class"]), ("source folder", result["per_source"])):
        if not table:
            continue
        lines += ["", f"## By {title}", "", f"| {title} | images | model errors | flagged |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['model_errors']} | {v['flagged']} |" for k, v in table.items()]
    lines += ["", "## Flagged images, least likely label first", ""]
    if result["issues"]:
        lines.append(f"All {len(result['issues'])} are in [label_issues.csv](label_issues.csv). After review, write "
                     "the right class in its `corrected` column (leave it empty where the label stands) and train with "
                     "`braintumor train --relabel label_issues.csv`, or leave them all out with `--exclude label_issues.csv`.")
        if shown:
            lines += [f"The first {shown} are shown below (caption: source folder · file, given → suggested class and "
                      "its probability).", "", "![flagged images](label_issues.png)"]
        lines += ["", "| # | file | source | given | suggested | p(given) | p(suggested) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['rank']} | `{r['path']}` | {r['source']} | {r['label']} | {r['suggested']} | {r['p_label']:.3f} | "
                  f"{r['p_suggested']:.3f} |" for r in result["issues"][:30]]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
