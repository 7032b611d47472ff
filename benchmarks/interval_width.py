"""How much copies in a test set narrow its confidence intervals: per-image against per-group bootstrap.

A test set of ``dedup`` or ``original`` holds copies of some images (``dedup`` keeps each copy
group on one side of the split, so a test image's copies are all in the test set). A model gets
copies right or wrong together, so they are not independent test cases, and a bootstrap that
resamples single images reports an interval that is too narrow. `braintumor evaluate` resamples
near-duplicate groups instead (``braintumor.metrics.stats``). This script measures the difference on
finished runs: for each run directory it scores the run's test split (as ``evaluate`` does) and
computes the 95% intervals of accuracy, macro-F1 and ECE both ways, with the test set's group
count, the largest group, and how many errors fall in groups of more than one image; and the
ECE that a perfectly calibrated model would measure on the split both ways (copies drawn one by
one, or right or wrong together), against the run's measured ECE.

It reads test figures, so use it on runs whose recipe is already chosen, never to choose one.

Usage: python benchmarks/interval_width.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/interval_width.json (or NAME).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, runs_parser, write  # noqa: E402
from dedup_accuracy import mean_accuracy_intervals  # noqa: E402

from braintumor.metrics.calibration import ece_if_calibrated, ece_interval, expected_calibration_error  # noqa: E402
from braintumor.evaluation.evaluator import predict_test_split  # noqa: E402
from braintumor.metrics.stats import bootstrap_ci  # noqa: E402


def widths(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None, n_classes: int) -> dict:
    """The 95% intervals of accuracy, macro-F1 and ECE, resampling `groups` (None: images), and
    the ECE a perfectly calibrated model would measure with copies right or wrong together
    (`groups`) or one by one (None)."""
    ci = bootstrap_ci(labels, probs.argmax(1), n_classes, groups=groups)
    return {"accuracy_ci": ci["accuracy"], "macro_f1_ci": ci["macro_f1"], "ece_ci": ece_interval(probs, labels, groups=groups),
            "accuracy_ci_width": ci["accuracy"][1] - ci["accuracy"][0],
            "ece_if_calibrated": ece_if_calibrated(probs, groups=groups)}


def measure(run: Path, data: str) -> dict:
    test = predict_test_split(run / "model.safetensors", data, progress=False)
    wrong = test.probs.argmax(1) != test.labels
    _, group_of, size = np.unique(test.groups, return_inverse=True, return_counts=True)
    in_copies = size[group_of] > 1
    images = widths(test.labels, test.probs, None, len(test.info.classes))
    groups = widths(test.labels, test.probs, test.groups, len(test.info.classes))
    return {
        "run": str(run),
        "protocol": test.context["protocol"],
        "seed": test.context["split seed"],
        "n": int(len(test.labels)),
        "correct": int((~wrong).sum()),
        "ece": expected_calibration_error(test.probs, test.labels),
        "groups": int(len(size)),
        "largest_group": int(size.max()),
        "images_in_groups_of_2_or_more": int(in_copies.sum()),
        "errors": int(wrong.sum()),
        "errors_in_groups_of_2_or_more": int((wrong & in_copies).sum()),
        "resampling_images": images,
        "resampling_groups": groups,
        "width_ratio": groups["accuracy_ci_width"] / images["accuracy_ci_width"] if images["accuracy_ci_width"] else None,
    }


def main() -> None:
    parser = runs_parser(__doc__, "interval_width.json")
    args = parser.parse_args()
    runs = [measure(Path(run), args.data) for run in args.runs]
    for r in runs:
        img, grp = r["resampling_images"]["accuracy_ci"], r["resampling_groups"]["accuracy_ci"]
        print(f"{r['protocol']} seed {r['seed']}: {r['correct']}/{r['n']} in {r['groups']} groups; accuracy 95% CI "
              f"images {100 * img[0]:.1f}-{100 * img[1]:.1f}%, groups {100 * grp[0]:.1f}-{100 * grp[1]:.1f}% "
              f"({r['width_ratio']:.2f}x as wide); ECE {r['ece']:.4f}, a calibrated model "
              f"{r['resampling_images']['ece_if_calibrated']['mean']:.4f} by images, "
              f"{r['resampling_groups']['ece_if_calibrated']['mean']:.4f} by groups")
    ratios = [r["width_ratio"] for r in runs if r["width_ratio"]]
    summary = {"mean_width_ratio": float(np.mean(ratios)) if ratios else None, "mean_ece": float(np.mean([r["ece"] for r in runs]))}
    for unit in ("images", "groups"):  # the mean over the runs, as benchmarks/dedup_accuracy.py gives it
        as_recorded = [{**r, "accuracy_ci": r[f"resampling_{unit}"]["accuracy_ci"],
                        "ci_groups": r["groups"] if unit == "groups" else None} for r in runs]
        summary[f"mean_accuracy_resampling_{unit}"] = mean_accuracy_intervals(as_recorded)
        summary[f"mean_ece_if_calibrated_{unit}"] = float(np.mean([r[f"resampling_{unit}"]["ece_if_calibrated"]["mean"]
                                                                   for r in runs]))
    path = write(args.output, {"machine": machine(), "command": " ".join(sys.argv), "runs": runs, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
