"""Is the new shipped model (trained on Sartaj + Masoud-Training) worse than today's recipe on
Sartaj's own test splits? A paired comparison on the same images, leak-free for both models.

For each of Sartaj's ``dedup`` and ``original`` test splits (seed 0):

- the images the new model never trained or early-stopped on, nor on any near-duplicate of them
  in either collection (groups formed across collections, as training forms them; its run's
  ``split.json`` says what it trained on). `scripts/release_exclude.py` keeps every ``dedup``
  test image of Sartaj out of its training, so there that is all of them; of the ``original``
  test split, whose copies it was not kept from, only some are left;
- the model it is compared with: for ``original``, the model shipped before (trained on that
  split's training part); for ``dedup``, today's recipe trained on Sartaj's ``dedup`` split with
  seed 0 (``--dedup-baseline``, e.g. ``braintumor train -d SARTAJ --protocol dedup``);
- both models' accuracy on those images, the difference (new minus old) with its 95% paired
  bootstrap interval (near-duplicate copies resampled together) and McNemar's p.

Usage: python benchmarks/release_comparison.py --new runs/release/model.safetensors
           --old src/braintumor/weights/default.safetensors --dedup-baseline runs/sartaj-dedup/model.safetensors
           [--sartaj DIR] [--output NAME]
Writes benchmarks/results/release_comparison.json (or NAME).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

from braintumor.data.dataset import load_images, scan  # noqa: E402
from braintumor.data.duplicates import duplicate_groups  # noqa: E402
from braintumor.data.protocols import make_split  # noqa: E402
from braintumor.inference.forward import predict_images  # noqa: E402
from braintumor.metrics.stats import paired_difference  # noqa: E402
from braintumor.model.checkpoint import load_checkpoint  # noqa: E402


def _probs(checkpoint: str, dataset, rows: np.ndarray) -> np.ndarray:
    model, info = load_checkpoint(checkpoint)
    images, found = load_images(dataset, info.preprocess, progress=False)
    if len(found) != len(dataset):
        raise SystemExit(f"{len(dataset) - len(found)} images of {dataset.root} cannot be read")
    return predict_images(model, images[rows], tta=info.tta, temperature=info.temperature, tta_view=info.tta_view)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", required=True, help="the new model's checkpoint (its run folder holds split.json)")
    parser.add_argument("--old", required=True, help="the model shipped before (trained on Sartaj's original split)")
    parser.add_argument("--dedup-baseline", required=True, help="today's recipe trained on Sartaj's dedup split, seed 0")
    parser.add_argument("--sartaj", default="../shared/data/sartaj")
    parser.add_argument("--output", default="release_comparison.json")
    args = parser.parse_args()
    start = time.time()

    new_model, new_info = load_checkpoint(args.new)
    collections = new_info.train_config["data"]
    collections = collections if isinstance(collections, list) else [collections]
    seen_paths = json.loads((Path(args.new).parent / "split.json").read_text())
    seen = {str(Path(p).resolve()) for p in seen_paths["train"] + seen_paths["val"]}
    pooled = scan(collections)
    pooled_groups = duplicate_groups(pooled, progress=False)
    group_of = {str(p.resolve()): int(g) for p, g in zip(pooled.paths, pooled_groups)}
    seen_groups = {group_of[p] for p in seen if p in group_of}

    sartaj = scan(args.sartaj)
    sartaj_groups = duplicate_groups(sartaj, progress=False)
    result = {"machine": machine(), "command": "benchmarks/release_comparison.py " + " ".join(sys.argv[1:]),
              "new": args.new, "trained_on": collections, "protocols": {}}
    for protocol, baseline in (("dedup", args.dedup_baseline), ("original", args.old)):
        test = make_split(sartaj, protocol, seed=0).test
        unseen = np.asarray([i for i in test if group_of.get(str(sartaj.paths[i].resolve())) not in seen_groups], dtype=int)
        labels = sartaj.labels[unseen]
        new_pred = _probs(args.new, sartaj, unseen).argmax(1)
        old_pred = _probs(baseline, sartaj, unseen).argmax(1)
        d = paired_difference(labels, old_pred, new_pred, groups=sartaj_groups[unseen])
        result["protocols"][protocol] = {
            "test_images": int(len(test)),
            "compared_on": int(len(unseen)),
            "left_out": "test images the new model, or a copy of them, trained or early-stopped on",
            "baseline": baseline,
            "new_accuracy": round(float((new_pred == labels).mean()), 4),
            "new_correct": int((new_pred == labels).sum()),
            "baseline_accuracy": round(float((old_pred == labels).mean()), 4),
            "baseline_correct": int((old_pred == labels).sum()),
            "difference": round(d["difference"], 4),
            "difference_ci": [round(x, 4) for x in d["difference_ci"]],
            "only_new_right": d["only_b_right"],
            "only_baseline_right": d["only_a_right"],
            "mcnemar_p": round(d["mcnemar_p"], 4),
            "no_worse": bool(d["difference_ci"][1] >= 0),  # the interval does not lie wholly below 0
        }
        row = result["protocols"][protocol]
        print(f"{protocol}: on {row['compared_on']} of {row['test_images']} test images: new {100 * row['new_accuracy']:.2f}% "
              f"vs {100 * row['baseline_accuracy']:.2f}%, difference {100 * row['difference']:+.2f} pp "
              f"(95% CI {100 * row['difference_ci'][0]:+.2f} to {100 * row['difference_ci'][1]:+.2f})", flush=True)
    result["seconds"] = round(time.time() - start, 1)
    print(write(args.output, result))


if __name__ == "__main__":
    main()
