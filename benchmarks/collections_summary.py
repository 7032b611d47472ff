"""Issue 41's accuracy targets, from finished runs on Sartaj + Masoud-Training.

Reads each run's ``test_metrics.json`` (written by ``braintumor train``) and ``model.json``, and
writes one JSON with the figures and the targets:

- ``--pooled RUN``: ``train -d SARTAJ -d MASOUD --protocol dedup`` (``scripts/release.sh``):
  accuracy >= 97.5% with its 95% interval, each collection beside it; and, for the model it
  ships, >= 99% on the Masoud-Training images it held out;
- ``--cross RUN`` (repeatable): ``--protocol cross`` runs, both ways; Sartaj -> Masoud-Training's
  target is >= 98%.

Usage: python benchmarks/collections_summary.py --pooled runs/release --cross runs/cross-sartaj-to-masoud
           --cross runs/cross-masoud-to-sartaj [--output NAME]
Writes benchmarks/results/collections.json (or NAME).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

KEPT = ("n", "correct", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "by_collection", "cross_collection")


def _run(folder: str) -> dict:
    folder = Path(folder)
    metrics = json.loads((folder / "test_metrics.json").read_text())
    info = json.loads((folder / "model.json").read_text())
    config = info["train_config"]
    return {
        "run": str(folder),
        "protocol": config["protocol"],
        "data": config["data"],
        "epochs_trained": len([line for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]),
        "epochs_planned": config["epochs"],
        "time_limit_min": config.get("time_limit_min"),
        "train_minutes": info["metrics"].get("train_minutes"),
        "best_epoch": info["metrics"].get("best_epoch"),
        "excluded_from_training": len(config.get("exclude") or []),
        **{k: metrics[k] for k in KEPT if k in metrics},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pooled", required=True, help="the pooled dedup run")
    parser.add_argument("--cross", action="append", default=[], help="a --protocol cross run")
    parser.add_argument("--output", default="collections.json")
    args = parser.parse_args()
    pooled = _run(args.pooled)
    cross = [_run(folder) for folder in args.cross]
    targets = {"pooled_ge_97.5pct": pooled["accuracy"] >= 0.975}
    masoud = (pooled.get("by_collection") or {}).get("masoud")
    if masoud:
        targets["masoud_held_out_ge_99pct"] = masoud["accuracy"] >= 0.99
    for run in cross:
        c = run["cross_collection"]
        if c["tested_on"] == "masoud" and c["trained_on"] == ["sartaj"]:
            targets["sartaj_to_masoud_ge_98pct"] = run["accuracy"] >= 0.98
    result = {"machine": machine(), "command": "benchmarks/collections_summary.py " + " ".join(sys.argv[1:]),
              "pooled": pooled, "cross": cross, "targets_met": targets}
    print(json.dumps(targets, indent=2))
    print(write(args.output, result))


if __name__ == "__main__":
    main()
