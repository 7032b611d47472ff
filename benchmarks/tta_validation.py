"""Choose the test-time view on validation data only (never the test split).

For each run directory (written by ``braintumor train``) this re-creates the run's split from its
stored config, as ``evaluate`` does, and scores the best checkpoint's validation images with the
logits of each image averaged with one `MirrorView` (the mirror, rotated and/or zoomed), at the
run's fitted temperature. It reports, per view and pooled over the runs, accuracy and the mean
negative log-likelihood, and per run the cross-fitted ECE of `recipe_validation` (its mean
over the runs in ``pooled``). Without test-time augmentation is listed as ``none``. The entries of
`COMBINATIONS` average the image with several views (more forward passes per image).

Usage: python benchmarks/tta_validation.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/tta_validation.json (or NAME).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_score, machine, pooled_summary, run_validation_set, runs_parser, write  # noqa: E402
from recipe_validation import cross_fitted_ece  # noqa: E402

from braintumor.model.factory import to_float  # noqa: E402
from braintumor.model.views import MirrorView  # noqa: E402
from braintumor.metrics.calibration import nll  # noqa: E402

VIEWS = {
    "mirror": MirrorView(),
    **{f"mirror rotated {a:+g}°": MirrorView(angle=a) for a in (-12.0, -8.0, -4.0, 4.0, 8.0, 12.0)},
    **{f"mirror zoomed {z:g}": MirrorView(zoom=z) for z in (0.9, 1.1, 1.2)},
}
COMBINATIONS = {
    "3 views: mirrors rotated -8°, +8°": ("mirror rotated -8°", "mirror rotated +8°"),
    "5 views: mirrors rotated -8°, +8°, zoomed 0.9, 1.1": (
        "mirror rotated -8°", "mirror rotated +8°", "mirror zoomed 0.9", "mirror zoomed 1.1"),
}


@torch.inference_mode()
def logits_of(model, images: np.ndarray, view: MirrorView | None, batch_size: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]))
        out.append(model(x if view is None else view.apply(x)).float().numpy())
    return np.concatenate(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def scores(logits: np.ndarray, labels: np.ndarray, temperature: float) -> tuple[int, float]:
    """(correct predictions, summed negative log-likelihood) at `temperature`."""
    return int((logits.argmax(1) == labels).sum()), nll(logits, labels, temperature) * len(labels)


def main() -> None:
    args = runs_parser(__doc__, "tta_validation.json").parse_args()

    names = ["none", *VIEWS, *COMBINATIONS]
    pooled = {name: [0, 0.0] for name in names}
    rows, total = [], 0
    for run in map(Path, args.runs):
        model, info, val_images, labels = run_validation_set(run, args.data)
        model.eval()
        config = info.train_config
        plain = logits_of(model, val_images, None)
        view_logits = {name: logits_of(model, val_images, view) for name, view in VIEWS.items()}
        row = {"run": str(run), "protocol": config["protocol"], "seed": config["seed"], "val_n": len(labels), "views": {}}
        for name in names:
            averaged = COMBINATIONS.get(name, (name,) if name in VIEWS else ())
            logits = (plain + sum(view_logits[v] for v in averaged)) / (1 + len(averaged))
            row["views"][name] = add_score(pooled, name, *scores(logits, labels, info.temperature), len(labels))
            row["views"][name]["cross_fitted_ece"] = round(cross_fitted_ece(softmax(logits), labels), 4)
        total += len(labels)
        rows.append(row)
        print(run, {k: v["accuracy"] for k, v in row["views"].items()}, flush=True)
    summary = pooled_summary(pooled, total, label=lambda name: f"{name:>22}")
    for name in names:  # the mean over the runs: each run's temperature is its own
        summary[name]["cross_fitted_ece_mean"] = round(float(np.mean([r["views"][name]["cross_fitted_ece"] for r in rows])), 4)
    path = write(args.output, {"machine": machine(), "views": {k: v.to_dict() for k, v in VIEWS.items()},
                               "combinations": {k: list(v) for k, v in COMBINATIONS.items()},
                               "pooled": summary, "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
