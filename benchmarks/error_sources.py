"""Where the validation errors come from: by source folder (Sartaj's Training or Testing) and class.

The dataset's maintainers of a later release reported part of the glioma class as mislabeled, and
the official Testing folder is much harder than a random split (the `official` protocol scores
about 82%). Under `original` and `dedup` the Testing folder's images are pooled with the rest, so
they land in every split. This script measures how much of a run's validation error comes from
them, on validation images only (never the test split).

For each run directory (written by ``braintumor train``) it re-creates the run's split from its
stored config, as ``evaluate`` does, scores the best checkpoint's validation images with the
checkpoint's test-time view, and counts images and errors per source folder and per class. The
pooled figures sum over the runs given (one validation set per split seed). Every error is
listed (file, label, prediction, its probability) and shown in a contact sheet, so that a reader
can judge the labels.

Usage: python benchmarks/error_sources.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/error_sources.json (or NAME) and the contact sheet beside it (.png).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, run_and_split, runs_parser, write  # noqa: E402

from braintumor.data.classes import CLASSES  # noqa: E402
from braintumor.metrics.figures import plot_thumbnails  # noqa: E402
from braintumor.inference.forward import predict_images  # noqa: E402


def tally(sources: list[str], labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Images, errors and accuracy per source folder, per class within each, and the confusions."""
    out = {}
    for source in sorted(set(sources)):
        keep = np.array([s == source for s in sources])
        y, p = labels[keep], predicted[keep]
        out[source] = {
            "n": int(keep.sum()),
            "errors": int((y != p).sum()),
            "accuracy": round(float((y == p).mean()), 4),
            "per_class": {
                CLASSES[c]: {"n": int((y == c).sum()), "errors": int(((y == c) & (p != c)).sum())}
                for c in range(len(CLASSES))
            },
            "confusions": {
                f"{CLASSES[a]} -> {CLASSES[b]}": n
                for (a, b), n in sorted(Counter(zip(y[y != p].tolist(), p[y != p].tolist())).items())
            },
        }
    return out


def main() -> None:
    parser = runs_parser(__doc__, "error_sources.json")
    args = parser.parse_args()

    rows, sources, labels, predicted, errors, thumbs = [], [], [], [], [], []
    for run in map(Path, args.runs):
        model, info, images, found, split = run_and_split(run, args.data)
        val = split.val
        probs = predict_images(model, images[val], tta=info.tta, tta_view=info.tta_view)
        run_sources = [found.splits[i] for i in val]
        run_labels, run_pred = found.labels[val], probs.argmax(1)
        for k in np.flatnonzero(run_labels != run_pred):
            errors.append(
                {
                    "seed": info.train_config.get("seed"),
                    "path": str(found.paths[val[k]].relative_to(found.root)),
                    "source": run_sources[k],
                    "label": CLASSES[run_labels[k]],
                    "predicted": CLASSES[run_pred[k]],
                    "p": round(float(probs[k, run_pred[k]]), 3),
                }
            )
            thumbs.append(images[val[k]])
        rows.append(
            {
                "run": str(run),
                "protocol": info.train_config.get("protocol"),
                "seed": info.train_config.get("seed"),
                "by_source": tally(run_sources, run_labels, run_pred),
            }
        )
        sources += run_sources
        labels.append(run_labels)
        predicted.append(run_pred)
        print(f"{run}: " + ", ".join(f"{s} {v['n'] - v['errors']}/{v['n']}" for s, v in rows[-1]["by_source"].items()))

    pooled = tally(sources, np.concatenate(labels), np.concatenate(predicted))
    for source, v in pooled.items():
        v["share_of_images"] = round(v["n"] / len(sources), 4)
        v["share_of_errors"] = round(v["errors"] / len(errors), 4) if errors else 0.0
    order = sorted(range(len(errors)), key=lambda k: (errors[k]["source"], errors[k]["label"], errors[k]["predicted"]))
    errors, thumbs = [errors[k] for k in order], [thumbs[k] for k in order]
    payload = {
        "machine": machine(),
        "command": " ".join(["benchmarks/error_sources.py", *sys.argv[1:]]),
        "pooled": pooled,
        "runs": rows,
        "errors": errors,
    }
    path = write(args.output, payload)
    captions = [f"{e['source']} · {Path(e['path']).name[:14]}\n{e['label']} → {e['predicted']} {e['p']:.2f}" for e in errors]
    plot_thumbnails(thumbs, captions, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    for source, v in pooled.items():
        print(f"{source}: {v['n']} images ({v['share_of_images']:.0%}), accuracy {v['accuracy']:.2%}, {v['share_of_errors']:.0%} of errors")


if __name__ == "__main__":
    main()
