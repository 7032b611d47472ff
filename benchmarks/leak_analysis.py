"""What the duplicates do to the figures of already trained runs (no training here).

For the ``original``-protocol runs of train_accuracy.py: how many test images have a copy or
near-copy in the training/validation part (pixel-identical, and near-duplicates at thresholds
4, 6, 8), and the model's accuracy on those "leaked" test images and on the clean rest.

For the ``dedup`` runs of dedup_accuracy.py: the temperature fitted on validation against the
one that would be best on the test set itself (an oracle, for diagnosis only), and the test ECE
at T = 1, at the validation temperature and at the oracle temperature: how far temperature
scaling can go on these models.

Usage: python benchmarks/leak_analysis.py [--data DIR] [--runs runs/bench] [--seeds 0 1 2]
Writes benchmarks/results/leak_analysis.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import data_option, machine, write  # noqa: E402


def _test_predictions(run: Path, data: str, protocol: str, seed: int, temperature_one: bool = False):
    from braintumor.model.checkpoint import load_checkpoint
    from braintumor.data.dataset import load_images, scan
    from braintumor.inference.forward import predict_images
    from braintumor.data.protocols import make_split

    model, info = load_checkpoint(run / "model.safetensors")
    dataset = scan(data)
    images, dataset = load_images(dataset, info.preprocess, progress=False)
    split = make_split(dataset, protocol, seed)
    t = 1.0 if temperature_one else info.temperature
    val = predict_images(model, images[split.val], tta=info.tta, temperature=t, tta_view=info.tta_view)
    test = predict_images(model, images[split.test], tta=info.tta, temperature=t, tta_view=info.tta_view)
    return dataset, split, val, test, info


def original_leaks(run: Path, data: str, seed: int) -> dict:
    from braintumor.data.duplicates import connected_groups, equal_pairs, group_ids, hash_dataset

    dataset, split, _, probs, _ = _test_predictions(run, data, "original", seed)
    correct = probs.argmax(1) == dataset.labels[split.test]
    hashes = hash_dataset(dataset, progress=False)
    seen = np.concatenate([split.train, split.val])
    levels = {"pixel": connected_groups(len(dataset), *equal_pairs(hashes.pixel_digest))}
    levels.update({f"near_t{t}": group_ids(hashes, t) for t in (4, 6, 8)})
    out = {"n": int(len(correct)), "accuracy": float(correct.mean())}
    for name, groups in levels.items():
        leaked = np.isin(groups[split.test], groups[seen])
        out[name] = {
            "leaked_test_images": int(leaked.sum()),
            "accuracy_leaked": float(correct[leaked].mean()) if leaked.any() else None,
            "accuracy_clean": float(correct[~leaked].mean()),
        }
    return out


def dedup_calibration(run: Path, data: str, seed: int) -> dict:
    from braintumor.metrics.calibration import as_logits, expected_calibration_error, fit_temperature, with_temperature

    dataset, split, val, test, info = _test_predictions(run, data, "dedup", seed, temperature_one=True)
    y_val, y_test = dataset.labels[split.val], dataset.labels[split.test]
    t_val = fit_temperature(as_logits(val), y_val)
    t_oracle = fit_temperature(as_logits(test), y_test)
    return {
        "val_accuracy": float((val.argmax(1) == y_val).mean()),
        "test_accuracy": float((test.argmax(1) == y_test).mean()),
        "temperature_val": t_val,
        "temperature_stored": info.temperature,
        "temperature_test_oracle": t_oracle,
        "test_ece_t1": expected_calibration_error(test, y_test),
        "test_ece_t_val": expected_calibration_error(with_temperature(test, t_val), y_test),
        "test_ece_t_oracle": expected_calibration_error(with_temperature(test, t_oracle), y_test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_option(parser)
    parser.add_argument("--runs", default="runs/bench", help="folder holding original-seedS and dedup-seedS runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="leak_analysis.json")
    args = parser.parse_args()

    result: dict = {"machine": machine(), "command": " ".join(sys.argv), "original": {}, "dedup": {}}
    for seed in args.seeds:
        for protocol, analyse in (("original", original_leaks), ("dedup", dedup_calibration)):
            run = Path(args.runs) / f"{protocol}-seed{seed}"
            if (run / "model.safetensors").is_file():
                result[protocol][str(seed)] = analyse(run, args.data, seed)
    path = write(args.output, result)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
