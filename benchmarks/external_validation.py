"""External validation of a trained model: `braintumor evaluate MODEL --external DIR`, as JSON.

Scores every image of a labelled folder the model was not trained on, and checks the folder for
byte-identical, pixel-identical and near-duplicate copies of the images the model trained or
was early-stopped on (its training data is re-scanned and its split re-created from the
checkpoint). The JSON gives the accuracy, macro-F1 and ECE on all images and on the images
without a copy, the copy counts per level and class, and the time taken.

On this project's machines no second dataset is at hand, so the example is Sartaj's own
Testing folder scored by a model trained under the `official` protocol (on the Training folder
only): the duplicates that straddle the two folders are then copies of training images.

Usage: python benchmarks/external_validation.py --model runs/official/model.safetensors
           --external ../shared/data/sartaj/Testing [--with MODEL ...] [--out DIR] [--output NAME]
Writes benchmarks/results/external_validation.json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

from braintumor.evaluation.external import evaluate_external  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.safetensors)")
    parser.add_argument("--with", dest="members", nargs="+", default=[], help="more checkpoints, averaged (an ensemble)")
    parser.add_argument("--external", required=True, help="labelled folder to score (<class>/<image>)")
    parser.add_argument("--train-data", help="where the model's training dataset is (default: as recorded)")
    parser.add_argument("--out", default="runs/external", help="report folder (default: runs/external)")
    parser.add_argument("--output", default="external_validation.json", help="result file name in benchmarks/results/")
    args = parser.parse_args()
    start = time.time()
    metrics = evaluate_external(args.model, args.external, args.out, args.train_data, args.members, progress=False)
    keep = ("n", "correct", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "loss", "ece", "ci_groups")
    payload = {
        "machine": machine(),
        "command": "benchmarks/external_validation.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "members": args.members,
        "external": args.external,
        "all_images": {k: metrics[k] for k in keep if k in metrics},
        "by_source": metrics.get("by_source"),
        "training_copies": metrics.get("training_copies"),
        "unseen": metrics.get("unseen"),
        "report": metrics["report"],
        "seconds": round(time.time() - start, 1),
    }
    path = write(args.output, payload)
    unseen = payload["unseen"]
    print(f"all {metrics['n']}: {100 * metrics['accuracy']:.2f}%; "
          + (f"{unseen['n']} without a copy: {100 * unseen['accuracy']:.2f}%" if unseen else "every image has a copy")
          + f"; {path}")


if __name__ == "__main__":
    main()
