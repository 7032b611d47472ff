"""Does a model score better when it is shown its images at another size than it trained at?

Networks trained with zoom augmentation can see objects at test time smaller than they saw them
in training, and scoring at a larger input size than the training size sometimes makes up for
it. For each run directory (written by ``braintumor train``) this re-creates the run's split as
``evaluate`` does, decodes the validation images at every size asked for (the run's
preprocessing with only the size changed) and scores the best checkpoint with the run's own
test-time view at its fitted temperature. Validation images only; never the test split.

Usage: python benchmarks/input_size_validation.py RUN_DIR [RUN_DIR ...] [--sizes 144 160 176 192]
       [--data DIR] [--output NAME]
Writes benchmarks/results/input_size_validation.json (or NAME).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_score, machine, nll_sum, pooled_summary, run_and_split, runs_parser, write  # noqa: E402

from braintumor.data.dataset import load_images  # noqa: E402
from braintumor.inference.forward import predict_images  # noqa: E402


def main() -> None:
    parser = runs_parser(__doc__, "input_size_validation.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[144, 160, 176, 192], help="input sizes to score, in pixels")
    args = parser.parse_args()

    loaded = {}  # preprocessing -> decoded images, shared by runs of the same data
    pooled = {size: [0, 0.0] for size in args.sizes}
    rows, total = [], 0
    for run in map(Path, args.runs):
        model, info, _, found, split = run_and_split(run, args.data)
        model.eval()
        labels = found.labels[split.val]
        row = {"run": str(run), "seed": info.train_config["seed"], "trained_at": info.preprocess.image_size,
               "val_n": len(labels), "sizes": {}}
        for size in args.sizes:
            preprocess = replace(info.preprocess, image_size=size)
            if preprocess not in loaded:
                loaded[preprocess] = load_images(found, preprocess, progress=False)
            images = loaded[preprocess][0][split.val]
            probs = predict_images(model, images, tta=info.tta, tta_view=info.tta_view, temperature=info.temperature)
            correct = int((probs.argmax(1) == labels).sum())
            row["sizes"][size] = add_score(pooled, size, correct, nll_sum(probs, labels), len(labels))
        total += len(labels)
        rows.append(row)
        print(run, {size: r["correct"] for size, r in row["sizes"].items()}, flush=True)
    summary = pooled_summary(pooled, total, label=lambda size: f"{size:>4} px")
    path = write(args.output, {"machine": machine(), "pooled": summary, "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
