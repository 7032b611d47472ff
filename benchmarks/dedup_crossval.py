"""Leak-free accuracy and calibration from K-fold cross-validation under the ``dedup`` protocol.

Three random splits test on 327 images each, and between them the figures move by several
points (issue 3). Cross-validation tests every image of the dataset exactly once, each by a model
that never saw it nor any near-duplicate of it. This runs ``braintumor train --protocol dedup
--folds K`` (default recipe) and then pools the K test folds' predictions (each fold's model with
its own temperature and test-time view, as ``evaluate`` scores it) into one set of 3,264:

- pooled accuracy and macro-F1 with 95% bootstrap intervals (near-duplicate groups resampled
  together, copies in different folds included), one-vs-rest ROC-AUC;
- pooled ECE after temperature scaling, its 95% bootstrap interval, and the ECE that a perfectly
  calibrated model with the same confidences would measure on this many images (the
  estimator's upward bias); the same per fold;
- mean ± standard deviation over the folds, and each fold's wall time.

With ``--reuse`` an existing cross-validation folder is scored without training again.

Usage: python benchmarks/dedup_crossval.py [--folds 5] [--seed 0] [--runs runs/cv] [--reuse] [--output NAME]
       [-- TRAIN OPTIONS]
Writes benchmarks/results/dedup_crossval.json (or NAME).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, data_option, machine, write  # noqa: E402

from braintumor.evaluation.crossval import score_folds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_option(parser)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/cv", help="where the cross-validation folder goes")
    parser.add_argument("--reuse", action="store_true", help="score an existing cross-validation folder, no training")
    parser.add_argument("--output", default="dedup_crossval.json", help="results file name in benchmarks/results/")
    parser.add_argument("extra", nargs="*", help="extra `braintumor train` options after --")
    args = parser.parse_args()

    out = Path(args.runs) / f"dedup-k{args.folds}-s{args.seed}"
    wall = None
    if not (args.reuse and (out / "crossval.json").is_file()):
        cmd = [sys.executable, "-m", "braintumor", "train", "--data", args.data, "--protocol", "dedup", "--folds",
               str(args.folds), "--seed", str(args.seed), "--out", str(out), "--overwrite", "--json", "-q", *args.extra]
        print("$", " ".join(cmd), flush=True)
        start = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = round(time.time() - start, 1)
    else:  # scoring an existing folder again: keep the training time its earlier results recorded
        previous = RESULTS / args.output
        recorded = json.loads(previous.read_text()) if previous.is_file() else {}
        if recorded.get("cv_dir") == str(out):
            wall = recorded.get("cv_wall_s")
    crossval = json.loads((out / "crossval.json").read_text())

    per_fold, pooled = score_folds(crossval["runs"], args.data, progress=False)  # with the current evaluation code
    pooled.pop("calibration_bins")
    folds = []
    for run, m in zip(crossval["runs"], per_fold):
        info = json.loads((Path(run) / "model.json").read_text())
        folds.append({
            "run": run,
            "n": m["n"],
            "accuracy": m["accuracy"],
            "ece": m["ece"],
            "ece_ci": m["ece_ci"],
            "ece_if_calibrated": m["ece_if_calibrated"],
            "temperature": m["temperature"],
            "best_epoch": info["metrics"].get("best_epoch"),
            "train_minutes": info["metrics"].get("train_minutes"),
        })
        print(f"{run}: {m['accuracy']:.4f} on {m['n']}, ECE {m['ece']:.4f}", flush=True)

    def spread(key: str) -> dict:
        values = np.array([f[key] for f in folds])
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1))}

    result = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "folds": args.folds,
        "seed": args.seed,
        "cv_dir": str(out),
        "cv_wall_s": wall,
        "pooled": pooled,
        "over_folds": {"accuracy": spread("accuracy"), "ece": spread("ece")},
        "per_fold": folds,
        "targets": {"dedup_accuracy_ge_97": pooled["accuracy"] >= 0.97, "ece_le_0.03": pooled["ece"] <= 0.03},
    }
    path = write(args.output, result)
    print(f"pooled over {pooled['n']} images: accuracy {pooled['accuracy']:.4f} {pooled['accuracy_ci']}, "
          f"macro-F1 {pooled['macro_f1']:.4f}, ECE {pooled['ece']:.4f} {pooled['ece_ci']} "
          f"(a calibrated model: {pooled['ece_if_calibrated']['mean']:.4f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
