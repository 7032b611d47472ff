"""Does training without the likely wrong labels help? Runs with ``train --exclude`` against runs without.

``braintumor label-issues`` flags images whose labels are likely wrong; ``braintumor train
--exclude label_issues.csv`` trains without them and tests on the same test split as a run
without exclusions. This script pairs candidate runs (with ``--exclude``) with baseline runs by
protocol and split seed, scores both on their common test split (each checkpoint with its
temperature and test-time view), and reports, pooled over seeds:

- test accuracy against the given labels, the paired difference with its 95% bootstrap interval
  (near-duplicate groups of each seed's test split resampled together) and McNemar's p;
- the same on the test images the flag list does not name, and how many of the flagged test
  images each run gets "right" (agrees with the likely wrong label);
- the ECE after temperature scaling, and what a perfectly calibrated model with the same
  confidences would measure: a temperature fitted on a validation set without the flagged
  labels suits clean labels, not a test split that keeps them.

The test split is scored here because the exclusion is not a recipe chosen on it: it needs a
cross-validation first, so it cannot be a default of ``braintumor train``.

Usage: python benchmarks/exclude_difference.py --baseline RUN [RUN ...] --candidate RUN [RUN ...]
       --flags label_issues.csv [--output NAME]
Writes benchmarks/results/exclude_difference.json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, pair_runs, seed_groups, write  # noqa: E402

from braintumor.data.dataset import read_path_list  # noqa: E402
from braintumor.metrics.calibration import ece_if_calibrated, expected_calibration_error  # noqa: E402
from braintumor.evaluation.evaluator import predict_test_split  # noqa: E402
from braintumor.metrics.stats import paired_difference  # noqa: E402


def scored(run: str, flags: set[str]):
    """``(protocol, seed)``, the run's test predictions, and which test images `flags` names."""
    test = predict_test_split(Path(run) / "model.safetensors", progress=False)
    root = Path(test.context["data"])
    flagged = np.array([p.relative_to(root).as_posix() in flags for p in test.paths])
    return (test.context["protocol"], test.context["split seed"]), test, flagged


def run_record(run: str, test, flagged: np.ndarray) -> dict:
    right = test.probs.argmax(1) == test.labels
    return {"run": run, "n": int(len(right)), "right": int(right.sum()), "flagged_n": int(flagged.sum()),
            "right_on_flagged": int(right[flagged].sum()), "right_on_others": int(right[~flagged].sum()),
            "excluded": len(test.info.train_config.get("exclude") or []), "temperature": test.info.temperature,
            "ece": expected_calibration_error(test.probs, test.labels),
            "ece_if_calibrated": ece_if_calibrated(test.probs, groups=test.groups)["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, help="runs without --exclude")
    parser.add_argument("--candidate", nargs="+", required=True, help="runs with --exclude, the same protocol and seeds")
    parser.add_argument("--flags", required=True, help="the flag list (label_issues.csv, or one path per line)")
    parser.add_argument("--output", default="exclude_difference.json")
    args = parser.parse_args()
    flags = set(read_path_list(args.flags))

    pairs, labels, pred_a, pred_b, groups, others = [], [], [], [], [], []
    for key, (base_run, base_test, _), (run, test, flagged) in pair_runs(args.baseline, args.candidate, lambda r: scored(r, flags)):
        if [str(p) for p in base_test.paths] != [str(p) for p in test.paths]:
            raise SystemExit(f"{run} and {base_run} were tested on different images")
        pairs.append({"protocol": key[0], "seed": key[1], "baseline": run_record(base_run, base_test, flagged),
                      "candidate": run_record(run, test, flagged)})
        labels.append(test.labels)
        pred_a.append(base_test.probs.argmax(1))
        pred_b.append(test.probs.argmax(1))
        groups.append(seed_groups(key[1], test.groups))
        others.append(~flagged)
    labels, pred_a, pred_b, groups, others = map(np.concatenate, (labels, pred_a, pred_b, groups, others))
    pooled = {
        "all": paired_difference(labels, pred_a, pred_b, groups=groups),
        "unflagged": paired_difference(labels[others], pred_a[others], pred_b[others], groups=groups[others]),
    }
    for who in ("baseline", "candidate"):
        pooled[who] = {k: sum(p[who][k] for p in pairs) for k in ("n", "right", "flagged_n", "right_on_flagged", "right_on_others")}
        pooled[who].update({k: float(np.mean([p[who][k] for p in pairs])) for k in ("ece", "ece_if_calibrated")})
    for part in ("all", "unflagged"):
        d = pooled[part]
        low, high = d["difference_ci"]
        print(f"{part}: candidate - baseline {100 * d['difference']:+.2f} points (95% CI {100 * low:+.2f} to {100 * high:+.2f}; "
              f"only candidate right {d['only_b_right']}, only baseline {d['only_a_right']}, McNemar p = {d['mcnemar_p']:.3f})")
    for who in ("baseline", "candidate"):
        p = pooled[who]
        print(f"{who}: {p['right']} of {p['n']}; on the {p['n'] - p['flagged_n']} unflagged {p['right_on_others']}, "
              f"on the {p['flagged_n']} flagged {p['right_on_flagged']}; ECE {p['ece']:.4f} (calibrated model: {p['ece_if_calibrated']:.4f})")
    path = write(args.output, {"machine": machine(), "command": " ".join(["benchmarks/exclude_difference.py", *sys.argv[1:]]),
                               "flags": args.flags, "flag_count": len(flags), "pairs": pairs, "pooled": pooled})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
