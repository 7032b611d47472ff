"""Accuracy and calibration of the default training recipe under the leak-free ``dedup`` protocol.

Runs ``braintumor train --protocol dedup`` (default settings) for split seeds 0, 1, 2, each in its
own process (``run_one`` of train_accuracy.py), and records per run the test accuracy with its 95%
bootstrap interval, macro-F1, ROC-AUC, the fitted temperature and the ECE before and after
temperature scaling. Beside them it puts the ``original`` figures of the same configuration from
benchmarks/results/train_accuracy.json, when that file exists. Targets of issue 3:

- ``dedup`` accuracy >= 97 %, mean over the three seeds, with its 95% CI;
- ECE <= 0.03 after temperature scaling on the ``dedup`` test split.

Two intervals are given for the mean accuracy over seeds: ``test_sampling`` (from each seed's
bootstrap interval, which resamples the test set's near-duplicate groups: how sure the figure is
given these three splits) and
``between_seeds`` (Student t over the seed means: how much it moves with the split; wide with
three seeds).

Each run also records the ECE's 95% bootstrap interval and the ECE that a perfectly calibrated
model with the same confidences would measure on its test split (ECE is biased upward on a few
hundred images). ``--reevaluate`` scores the runs already listed in the JSON file again with
the current evaluation code, keeping their training figures (time, memory): no training.
``--reuse`` scores finished runs in ``RUNS/dedup-seed{S}`` that no JSON lists yet (trained by
hand, e.g. with ``--no-test``), without training them again; their wall time and peak memory
are unknown, so the record gives the training minutes their checkpoint stores.

Usage: python benchmarks/dedup_accuracy.py [--data DIR] [--seeds 0 1 2] [--runs DIR] [--reevaluate | --reuse] [--output NAME]
       [-- extra train options]
Writes benchmarks/results/dedup_accuracy.json after every run (partial results survive). The
first run also hashes the dataset for its duplicate groups (cached afterwards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, data_option, machine, write  # noqa: E402
from train_accuracy import run_one, run_record  # noqa: E402


def mean_accuracy_intervals(runs: list[dict]) -> dict:
    """Mean accuracy over runs with a test-sampling interval and a between-seeds interval.

    Test sampling: each run's accuracy is taken as normal, with the standard error its own 95%
    bootstrap interval implies (width / 3.92; that interval resamples near-duplicate groups when
    the run records ``ci_groups``), or the binomial one ``sqrt(p (1 - p) / n)`` for runs recorded
    without an interval; the mean of independent runs then has standard error
    ``sqrt(sum se^2) / k``.
    """
    acc = np.array([r["correct"] / r["n"] for r in runs])
    se = np.array([
        (r["accuracy_ci"][1] - r["accuracy_ci"][0]) / (2 * 1.96) if r.get("accuracy_ci") else np.sqrt(a * (1 - a) / r["n"])
        for r, a in zip(runs, acc)
    ])
    half = 1.96 * np.sqrt((se**2).sum()) / len(acc)
    out = {"mean": float(acc.mean()), "test_sampling_95ci": [float(max(0.0, acc.mean() - half)), float(min(1.0, acc.mean() + half))],
           "test_sampling_resamples": "duplicate groups" if all(r.get("ci_groups") for r in runs) else "images"}
    if len(acc) > 1:
        half = stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc))
        out["std_between_seeds"] = float(acc.std(ddof=1))
        out["between_seeds_95ci"] = [float(max(0.0, acc.mean() - half)), float(min(1.0, acc.mean() + half))]
    return out


def original_figures(path: Path) -> dict | None:
    """The `original` protocol runs of train_accuracy.json, summarised the same way."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    runs = data.get("runs", {}).get("original")
    if not runs:
        return None
    return {"source": str(path), "date": data.get("machine", {}).get("date"), "command": data.get("command"),
            "seeds": [r["seed"] for r in runs], "accuracy": mean_accuracy_intervals(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_option(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default="runs/bench", help="where the run directories go")
    parser.add_argument("--output", default="dedup_accuracy.json")
    parser.add_argument("--original", default=str(RESULTS / "train_accuracy.json"), help="JSON with the original-protocol runs")
    parser.add_argument("--reevaluate", action="store_true",
                        help="evaluate the runs listed in the output file again (current evaluation code), no training")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate finished runs in RUNS/dedup-seed{S} instead of training them")
    parser.add_argument("extra", nargs="*", help="extra `braintumor train` options after --")
    args = parser.parse_args()

    if args.reevaluate:
        from braintumor.evaluation.evaluator import evaluate

        result = json.loads((RESULTS / args.output).read_text())
        result["reevaluated"] = {"machine": machine(), "command": " ".join(sys.argv)}
        for run in result["runs"]:
            evaluate(Path(run["run_dir"]) / "model.safetensors", args.data, progress=False)
            metrics = json.loads((Path(run["run_dir"]) / "test_metrics.json").read_text())
            run.update(recorded_figures(metrics), accuracy=metrics["accuracy"], correct=metrics["correct"], n=metrics["n"],
                       macro_f1=metrics["macro_f1"], loss=metrics["loss"])
    else:
        result = {"machine": machine(), "command": " ".join(sys.argv), "runs": []}
        for seed in args.seeds:
            out = Path(args.runs) / f"dedup-seed{seed}"
            run = reuse_one(args.data, seed, out) if args.reuse else run_one(args.data, "dedup", seed, out, args.extra)
            run.update(recorded_figures(json.loads((out / "test_metrics.json").read_text())))
            result["runs"].append(run)
            summarise(result, Path(args.original))
            write(args.output, result)
    summarise(result, Path(args.original))
    write(args.output, result)
    print(json.dumps(result["summary"], indent=2))


def reuse_one(data: str, seed: int, out: Path) -> dict:
    """A finished run's record, as `run_one` gives it, from evaluating its checkpoint now."""
    from braintumor.model.checkpoint import read_info
    from braintumor.evaluation.evaluator import evaluate

    checkpoint = out / "model.safetensors"
    if not checkpoint.is_file():
        raise SystemExit(f"--reuse: no finished run in {out}")
    info, _ = read_info(checkpoint)
    if info.train_config.get("protocol") != "dedup" or info.train_config.get("seed") != seed:
        raise SystemExit(f"--reuse: {out} is not a dedup run of split seed {seed}")
    record = run_record("dedup", seed, evaluate(checkpoint, data, progress=False), out, None, None)
    return {**record, "train_minutes": info.metrics.get("train_minutes"),
            "train_config": {k: info.train_config.get(k) for k in ("epochs", "time_limit_min", "image_size", "lr")}}


def recorded_figures(metrics: dict) -> dict:
    """The figures of a run's test metrics that this benchmark records."""
    return {
        "accuracy_ci": metrics["accuracy_ci"],
        "ci_groups": metrics.get("ci_groups"),
        "macro_f1_ci": metrics["macro_f1_ci"],
        "macro_roc_auc": metrics["macro_roc_auc"],
        "temperature": metrics["temperature"],
        "ece": metrics["ece"],
        "ece_ci": metrics.get("ece_ci"),
        "ece_if_calibrated": metrics.get("ece_if_calibrated"),
        "ece_uncalibrated": metrics["ece_uncalibrated"],
        "split_sizes": metrics.get("split sizes"),
    }


def summarise(result: dict, original_path: Path) -> None:
    runs = result["runs"]
    ece = np.array([r["ece"] for r in runs])
    summary = {
        "dedup": {
            "seeds": [r["seed"] for r in runs],
            "accuracy": mean_accuracy_intervals(runs),
            "macro_f1_mean": float(np.mean([r["macro_f1"] for r in runs])),
            "macro_roc_auc_mean": float(np.mean([r["macro_roc_auc"] for r in runs])),
            "ece_after_temperature_mean": float(ece.mean()),
            "ece_after_temperature_max": float(ece.max()),
            "ece_before_temperature_mean": float(np.mean([r["ece_uncalibrated"] for r in runs])),
            **({"ece_if_calibrated_mean": float(np.mean([r["ece_if_calibrated"]["mean"] for r in runs]))}
               if all(r.get("ece_if_calibrated") for r in runs) else {}),
            "temperatures": [r["temperature"] for r in runs],
        },
        "original": original_figures(original_path),
        "max_wall_min": max(r["wall_s"] for r in runs) / 60 if all(r.get("wall_s") for r in runs) else None,
    }
    if summary["original"]:
        summary["gap_original_minus_dedup"] = summary["original"]["accuracy"]["mean"] - summary["dedup"]["accuracy"]["mean"]
    summary["targets_met"] = {
        "dedup_accuracy_ge_97": summary["dedup"]["accuracy"]["mean"] >= 0.97,
        "ece_le_0.03_after_temperature": bool(ece.max() <= 0.03),
    }
    result["summary"] = summary


if __name__ == "__main__":
    main()
