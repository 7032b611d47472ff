"""Test accuracy of ensembles of finished runs of one split: `braintumor evaluate FIRST --with REST`.

Each ``--ensemble RUN RUN ...`` is one split seed's members, for example the default recipe at
``--train-seed`` 0, 1 and 2 (a deep ensemble); the first run is the one the ensemble is compared
with. For each, the script scores on that split's test images (each member with its own
temperature and test-time view, the calibrated probabilities averaged):

- the ensemble's accuracy with its 95% bootstrap interval (near-duplicate groups resampled
  together), macro-F1, ECE and what a perfectly calibrated model would measure;
- every member alone, and the paired difference of the ensemble against the first run.

Pooled over the ensembles: the mean accuracy over split seeds (issue 3's target is stated so) and
the paired difference against the first runs, groups kept apart by seed. `evaluate` refuses a
member that trained or early-stopped on a test image, so every figure here is leak-free when the
first run's is. The members were chosen on validation images (`ensemble_validation.py`); this
looks at their test images once.

Usage: python benchmarks/ensemble_accuracy.py --ensemble RUN RUN [RUN ...] [--ensemble ...] [--output NAME]
Writes benchmarks/results/ensemble_accuracy.json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, seed_groups, write  # noqa: E402

from braintumor.metrics.calibration import ece_if_calibrated, expected_calibration_error  # noqa: E402
from braintumor.evaluation.evaluator import classification_metrics, predict_test_split  # noqa: E402
from braintumor.metrics.stats import paired_difference  # noqa: E402


def score(runs: list[str]) -> tuple[dict, tuple]:
    """One ensemble's record, and ``(labels, first run's classes, ensemble's classes, groups)``."""
    first, *rest = [Path(r) / "model.safetensors" for r in runs]
    ensemble = predict_test_split(first, members=rest, progress=False)
    alone = ensemble.member_probs  # each run alone, on the first run's test images
    labels = ensemble.labels
    metrics = classification_metrics(labels, ensemble.probs, list(ensemble.info.classes), groups=ensemble.groups)
    first_pred, pred = alone[0].argmax(1), ensemble.probs.argmax(1)
    record = {
        "protocol": ensemble.context["protocol"],
        "seed": ensemble.context["split seed"],
        "runs": runs,
        "n": int(len(labels)),
        "correct": int((pred == labels).sum()),
        "accuracy": metrics["accuracy"],
        "accuracy_ci": metrics.get("accuracy_ci"),
        "macro_f1": metrics["macro_f1"],
        "loss": metrics["loss"],
        "ece": expected_calibration_error(ensemble.probs, labels),
        "ece_if_calibrated": ece_if_calibrated(ensemble.probs, groups=ensemble.groups)["mean"],
        "members_correct": [int((p.argmax(1) == labels).sum()) for p in alone],
        "members_ece": [expected_calibration_error(p, labels) for p in alone],
        "against_first": paired_difference(labels, first_pred, pred, groups=ensemble.groups),
    }
    return record, (labels, first_pred, pred, seed_groups(record["seed"], ensemble.groups))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ensemble", nargs="+", action="append", required=True, metavar="RUN",
                        help="the run folders of one ensemble, the run to compare with first (repeat for each split seed)")
    parser.add_argument("--output", default="ensemble_accuracy.json")
    args = parser.parse_args()
    if any(len(runs) < 2 for runs in args.ensemble):
        raise SystemExit("each --ensemble needs at least two runs")

    records, pooled_parts = [], []
    for runs in args.ensemble:
        record, parts = score(runs)
        records.append(record)
        pooled_parts.append(parts)
        d = record["against_first"]
        print(f"{record['protocol']} seed {record['seed']}: ensemble {record['correct']}/{record['n']} "
              f"({100 * record['accuracy']:.2f}%), members {record['members_correct']}; against the first "
              f"{100 * d['difference']:+.2f} points (95% CI {100 * d['difference_ci'][0]:+.2f} to {100 * d['difference_ci'][1]:+.2f})")
    labels, first_pred, pred = (np.concatenate([p[i] for p in pooled_parts]) for i in range(3))
    groups = np.asarray([g for p in pooled_parts for g in p[3]])
    pooled = {
        "mean_accuracy": float(np.mean([r["accuracy"] for r in records])),
        "mean_first_accuracy": float(np.mean([r["members_correct"][0] / r["n"] for r in records])),
        "mean_member_accuracy": float(np.mean([np.mean(r["members_correct"]) / r["n"] for r in records])),
        "mean_ece": float(np.mean([r["ece"] for r in records])),
        "mean_ece_if_calibrated": float(np.mean([r["ece_if_calibrated"] for r in records])),
        "against_first": paired_difference(labels, first_pred, pred, groups=groups),
        "prediction_cost": f"{int(np.mean([len(r['runs']) for r in records]))} network passes per view, against 1 for one run",
    }
    d = pooled["against_first"]
    print(f"mean over seeds: ensemble {100 * pooled['mean_accuracy']:.2f}%, first runs {100 * pooled['mean_first_accuracy']:.2f}%, "
          f"mean member {100 * pooled['mean_member_accuracy']:.2f}%; pooled difference {100 * d['difference']:+.2f} points "
          f"(95% CI {100 * d['difference_ci'][0]:+.2f} to {100 * d['difference_ci'][1]:+.2f}, McNemar p = {d['mcnemar_p']:.3f}); "
          f"ECE {pooled['mean_ece']:.4f} (calibrated model: {pooled['mean_ece_if_calibrated']:.4f})")
    path = write(args.output, {"machine": machine(), "command": " ".join(["benchmarks/ensemble_accuracy.py", *sys.argv[1:]]),
                               "ensembles": records, "pooled": pooled})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
