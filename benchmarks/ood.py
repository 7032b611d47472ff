"""Out-of-distribution rejection on real data: the model's test split against images that are
not brain MRI slices (`oodset`: scikit-image photographs, blank, noise, gradients,
text, imitations of chest X-rays, CT, ultrasound, hand X-rays).

Reports, for the detector as stored (Mahalanobis distance on the stride-16 stage, see
`braintumor.inference.ood`): the AUROC (target >= 0.99), the share of test-split images accepted at the
stored threshold (target >= 98%), the share of the OOD set rejected; and, to justify the choice,
the AUROC of alternatives on the same images: Mahalanobis on the penultimate features (fitted the
same way), the energy score (-logsumexp of the logits) and the maximum softmax probability.

If the checkpoint has no detector yet (trained before it existed), one is fitted into a
temporary copy from the run's own training/validation split; the test split is never used for
fitting. The split is the run folder's ``split.json``, else re-created from the checkpoint's
config on ``--data``.

For a run on several collections the share accepted is also given per collection and class.
``--skip-alternatives`` leaves the alternatives out (they pass over every training image twice).

Usage: python benchmarks/ood.py [--model PATH] [--data DIR] [--skip-alternatives] [--output NAME]
Writes benchmarks/results/ood.json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # oodset.py, the non-MRI images
from _common import machine, write  # noqa: E402

from braintumor.model.factory import to_float  # noqa: E402
from braintumor.model.checkpoint import load_checkpoint, read_info  # noqa: E402
from braintumor.inference.ood import OODStats, auroc, fit_checkpoint, fit_ood, forward_with_ood_features, run_parts  # noqa: E402
from oodset import ood_images  # noqa: E402
from braintumor.inference.predictor import DEFAULT_MODEL  # noqa: E402


@torch.inference_mode()
def _forward(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Logits, detector features and penultimate features of preprocessed images."""
    out: dict[str, list] = {"logits": [], "stage": [], "penultimate": []}
    for start in range(0, len(images), 64):
        x = to_float(torch.from_numpy(np.require(images[start : start + 64], requirements=["C", "W"])))
        logits, stage = forward_with_ood_features(model, x)
        out["logits"].append(logits)
        out["stage"].append(stage.numpy())
        out["penultimate"].append(model.features(x).numpy())
    return {"logits": torch.cat(out["logits"]), "stage": np.concatenate(out["stage"]), "penultimate": np.concatenate(out["penultimate"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint (default: the shipped model)")
    parser.add_argument("--data", action="append", help="the run's data folder(s), if they moved (default: as recorded)")
    parser.add_argument("--skip-alternatives", action="store_true", help="only the stored detector")
    parser.add_argument("--output", default="ood.json")
    args = parser.parse_args()

    model_path = Path(args.model)
    fitted_here = read_info(model_path)[0].extra.get("ood") is None
    work = tempfile.TemporaryDirectory()
    if fitted_here:
        copy = Path(work.name) / "model.safetensors"
        fit_checkpoint(model_path, out=copy, progress=False)
        model, info = load_checkpoint(copy)
    else:
        model, info = load_checkpoint(model_path)
    stats = OODStats.load_from(info)
    images, labels, parts = run_parts(model_path, info, args.data, progress=False)
    ood = ood_images(size=256)

    test = _forward(model, images[parts["test"]])
    outside = _forward(model, np.stack([info.preprocess(img) for _, img in ood]))
    test_scores, ood_scores = stats.scores(test["stage"]), stats.scores(outside["stage"])


    kinds: dict[str, list[bool]] = {}
    for (name, _), score in zip(ood, ood_scores):
        kind = "photo" if name.startswith("skimage") else name.rsplit("-", 1)[0] if name[-1].isdigit() else name
        kinds.setdefault(kind, []).append(bool(score > stats.threshold))
    closest = np.argsort(ood_scores)[:5]
    result = {
        "machine": machine(),
        "model": args.model,
        "detector": "fitted here from the run's train/val split" if fitted_here else "stored in the checkpoint",
        "method": info.extra["ood"]["method"],
        "features": info.extra["ood"].get("features"),
        "threshold": round(stats.threshold, 3),
        "val_accepted": round(stats.val_accepted, 4),
        "test_images": int(len(parts["test"])),
        "ood_images": len(ood),
        "auroc": round(auroc(test_scores, ood_scores), 4),
        "test_accepted": round(float((test_scores <= stats.threshold).mean()), 4),
        "ood_rejected": round(float((ood_scores > stats.threshold).mean()), 4),
        "ood_rejected_by_kind": {k: round(float(np.mean(v)), 3) for k, v in sorted(kinds.items())},
        "ood_closest_to_threshold": {ood[i][0]: round(float(ood_scores[i] / stats.threshold), 2) for i in closest},
        "test_max_over_threshold": round(float(test_scores.max() / stats.threshold), 2),
        "sequence_variants": info.extra["ood"].get("sequence_variants", 0),
    }
    data = info.train_config.get("data")
    if isinstance(data, list) and args.data is None:  # several collections: acceptance per collection and class
        from braintumor.data.dataset import load_images, scan

        dataset = load_images(scan(data, info.train_config.get("class_map") or None), info.preprocess, progress=False)[1]
        accepted = test_scores <= stats.threshold
        names = np.asarray(dataset.collection_of())[parts["test"]]
        classes = np.asarray(info.classes)[labels[parts["test"]]]
        result["test_accepted_by_collection"] = {
            name: {"accepted": round(float(accepted[names == name].mean()), 4), "images": int((names == name).sum()),
                   "per_class": {c: round(float(accepted[(names == name) & (classes == c)].mean()), 4)
                                 for c in sorted(set(classes[names == name]))}}
            for name in sorted(set(names))}
    if not args.skip_alternatives:
        train, val = _forward(model, images[parts["train"]]), _forward(model, images[parts["val"]])
        penultimate = fit_ood(train["penultimate"], labels[parts["train"]], val["penultimate"], stats.accept)
        energy = lambda logits: (-torch.logsumexp(logits, dim=1)).numpy()  # noqa: E731
        max_softmax = lambda logits: (-logits.softmax(dim=1).max(dim=1).values).numpy()  # noqa: E731
        result["alternatives_auroc"] = {
            "mahalanobis_penultimate": round(auroc(penultimate.scores(test["penultimate"]), penultimate.scores(outside["penultimate"])), 4),
            "mahalanobis_penultimate_ood_rejected": round(float((penultimate.scores(outside["penultimate"]) > penultimate.threshold).mean()), 4),
            "energy": round(auroc(energy(test["logits"]), energy(outside["logits"])), 4),
            "max_softmax": round(auroc(max_softmax(test["logits"]), max_softmax(outside["logits"])), 4),
        }
    result["targets_met"] = {"auroc_ge_0.99": result["auroc"] >= 0.99, "test_accepted_ge_98pct": result["test_accepted"] >= 0.98}
    print(write(args.output, result).read_text())


if __name__ == "__main__":
    main()
