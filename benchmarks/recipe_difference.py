"""Is a candidate training recipe better than the baseline? A paired comparison on validation data.

Runs are paired by protocol and split seed (the same validation images). For each pair this
re-creates the split from the run's stored config, as ``evaluate`` does, scores both best
checkpoints on the validation images with each checkpoint's test-time view, and pools the pairs
of all seeds. It reports the difference in validation accuracy (candidate minus baseline) with a
95% paired bootstrap interval that resamples near-duplicate groups (copies together; groups of
different seeds are kept apart), the images only one recipe gets right, and McNemar's exact
p-value (which counts images as independent). Validation only: the test split is never scored.
A run trained with ``--exclude`` is scored on the validation images of its split without the
exclusions (it trained on none of them), and each pair also gives both runs' figures on the
images neither excluded (and no in-loop comparison, whose validation sets then differ). Each
pair also records how many epochs each run trained: under the time limit a run on a slower
or busier machine trains fewer, which is a difference the recipe did not make. So each pair also
gives both runs' best in-loop validation accuracy (no test-time view) over the epochs both
trained, from their ``metrics.jsonl``: a comparison at equal epochs, pooled as images right.

Usage: python benchmarks/recipe_difference.py --baseline RUN [RUN ...] --candidate RUN [RUN ...]
       [--data DIR] [--output NAME]
Writes benchmarks/results/recipe_difference.json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (best_val_acc, data_option, epochs_run, full_validation, machine, pair_runs,  # noqa: E402
                     run_and_split, seed_groups, write)

from braintumor.data.duplicates import duplicate_groups  # noqa: E402
from braintumor.inference.forward import predict_images  # noqa: E402
from braintumor.data.protocols import excluded_indices  # noqa: E402
from braintumor.metrics.stats import paired_difference  # noqa: E402


def validation_predictions(run: Path, data: str) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(protocol, seed)``, validation labels, predicted classes, near-duplicate groups of a run,
    and which of those images the run excluded (``train --exclude``).

    A run trained with excluded images is scored on the validation set of its split without the
    exclusions, the same images as a baseline's: it trained on none of them, since an excluded
    image leaves training too.
    """
    model, info, images, found, split = run_and_split(run, data)
    cfg = info.train_config
    val = full_validation(found, info, split)
    probs = predict_images(model, images[val], tta=info.tta, tta_view=info.tta_view)
    groups = duplicate_groups(found, progress=False)[val]
    excluded = np.isin(val, excluded_indices(found, cfg["exclude"])) if cfg.get("exclude") else np.zeros(len(val), bool)
    key = (cfg["protocol"], cfg["seed"])
    return key, found.labels[val], probs.argmax(1), groups, excluded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", nargs="+", required=True, help="run directories of the baseline recipe")
    parser.add_argument("--candidate", nargs="+", required=True, help="run directories of the candidate, same seeds")
    data_option(parser)
    parser.add_argument("--output", default="recipe_difference.json")
    args = parser.parse_args()

    labels, pred_a, pred_b, groups, pairs = [], [], [], [], []
    candidates = pair_runs(list(map(Path, args.baseline)), list(map(Path, args.candidate)),
                           lambda r: validation_predictions(r, args.data))
    for key, (base_run, base_y, base_pred, _, base_excluded), (run, y, pred, group, excluded) in candidates:
        assert np.array_equal(base_y, y), "paired runs must share the validation set"
        kept = ~(excluded | base_excluded)  # the images neither run left out
        pairs.append({"protocol": key[0], "seed": key[1], "baseline": str(base_run), "candidate": str(run), "val_n": int(len(y)),
                      "baseline_right": int((base_pred == y).sum()), "candidate_right": int((pred == y).sum()),
                      "excluded_n": int((~kept).sum()), "baseline_right_kept": int((base_pred == y)[kept].sum()),
                      "candidate_right_kept": int((pred == y)[kept].sum()),
                      "baseline_epochs": epochs_run(base_run), "candidate_epochs": epochs_run(run)})
        equal = min(pairs[-1]["baseline_epochs"], pairs[-1]["candidate_epochs"])
        if kept.all():
            pairs[-1].update(equal_epochs=equal, baseline_right_at_equal_epochs=round(best_val_acc(base_run, equal) * len(y)),
                             candidate_right_at_equal_epochs=round(best_val_acc(run, equal) * len(y)))
        else:  # the in-loop figures are on validation sets of different images
            pairs[-1].update(equal_epochs=equal, baseline_right_at_equal_epochs=None, candidate_right_at_equal_epochs=None)
        labels.append(y)
        pred_a.append(base_pred)
        pred_b.append(pred)
        groups.append(seed_groups(key[1], group))
    pooled_excluded = any(p["excluded_n"] for p in pairs)
    pooled = paired_difference(np.concatenate(labels), np.concatenate(pred_a), np.concatenate(pred_b),
                               groups=np.concatenate(groups))
    pooled.update(val_n=sum(p["val_n"] for p in pairs), baseline_right=sum(p["baseline_right"] for p in pairs),
                  candidate_right=sum(p["candidate_right"] for p in pairs),
                  excluded_n=sum(p["excluded_n"] for p in pairs),
                  baseline_right_kept=sum(p["baseline_right_kept"] for p in pairs),
                  candidate_right_kept=sum(p["candidate_right_kept"] for p in pairs),
                  **{f"{who}_right_at_equal_epochs": None if pooled_excluded else sum(p[f"{who}_right_at_equal_epochs"] for p in pairs)
                     for who in ("baseline", "candidate")})
    low, high = pooled["difference_ci"]
    print(f"candidate - baseline: {pooled['candidate_right']} - {pooled['baseline_right']} of {pooled['val_n']} "
          f"({100 * pooled['difference']:+.2f} points, 95% CI {100 * low:+.2f} to {100 * high:+.2f}; "
          f"McNemar p = {pooled['mcnemar_p']:.3f})")
    if pooled["excluded_n"]:
        print(f"on the {pooled['val_n'] - pooled['excluded_n']} validation images neither run excluded: "
              f"{pooled['candidate_right_kept']} - {pooled['baseline_right_kept']}")
    if not pooled_excluded:
        print(f"at equal epochs, best in-loop validation (no test-time view): {pooled['candidate_right_at_equal_epochs']} - "
              f"{pooled['baseline_right_at_equal_epochs']} of {pooled['val_n']}")
    path = write(args.output, {"machine": machine(), "command": " ".join(sys.argv), "pairs": pairs, "pooled": pooled})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
