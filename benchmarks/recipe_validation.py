"""Compare training recipes on validation data only (never the test split).

For each run directory (written by ``braintumor train``) this re-creates the run's split from its
stored training config, as ``evaluate`` does, and reports, for the best checkpoint with the checkpoint's flip
averaging:

- validation accuracy;
- cross-fitted ECE after temperature scaling: the temperature is fitted on a random half of the
  validation images and the ECE measured on the other half, both ways, over 20 random halvings
  (fitting and measuring on the same images would flatter every recipe alike);
- the temperature fitted on all validation images.

Runs compared against each other must share the split seed and protocol (same validation set).

Usage: python benchmarks/recipe_validation.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/recipe_validation.json (or NAME).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import epochs_run, machine, run_validation_set, runs_parser, write  # noqa: E402

from braintumor.metrics.calibration import as_logits, expected_calibration_error, fit_temperature, with_temperature  # noqa: E402
from braintumor.inference.forward import predict_images  # noqa: E402


# Training-config keys that say where and how a run ran, not what it trained: left out of "recipe".
NOT_RECIPE = {"data", "out", "class_map", "protocol", "seed", "progress", "resume", "threads"}


def cross_fitted_ece(probs: np.ndarray, labels: np.ndarray, repeats: int = 20, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fit, held in (halves, halves[::-1]):
            temperature = fit_temperature(as_logits(probs[fit]), labels[fit])
            values.append(expected_calibration_error(with_temperature(probs[held], temperature), labels[held]))
    return float(np.mean(values))


def main() -> None:
    parser = runs_parser(__doc__, "recipe_validation.json")
    args = parser.parse_args()

    rows = []
    for run in map(Path, args.runs):
        model, info, val_images, labels = run_validation_set(run, args.data)
        config = info.train_config
        probs = predict_images(model, val_images, tta=info.tta, tta_view=info.tta_view)
        rows.append({
            "run": str(run),
            "protocol": config["protocol"],
            "seed": config["seed"],
            "recipe": {k: v for k, v in config.items() if k not in NOT_RECIPE},
            "best_epoch": info.metrics.get("best_epoch"),
            "epochs_run": epochs_run(run),
            "val_n": int(len(labels)),
            "val_acc_tta": round(float((probs.argmax(1) == labels).mean()), 4),
            "val_ece_cross_fitted": round(cross_fitted_ece(probs, labels), 4),
            "temperature_all_val": round(fit_temperature(as_logits(probs), labels), 3),
        })
        print(json.dumps(rows[-1]), flush=True)
    print(write(args.output, {"machine": machine(), "command": " ".join(sys.argv), "runs": rows}))


if __name__ == "__main__":
    main()
