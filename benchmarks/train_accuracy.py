"""Accuracy and cost of the default training recipe.

Runs ``braintumor train`` (default settings) under the ``original`` protocol for split seeds
0, 1, 2 and under ``official``, each in its own process, and records test accuracy, macro-F1,
wall time and peak memory per run, then the targets of issue 2:

- original-protocol test accuracy >= 98.5 %, mean over the three seeds;
- each run <= 15 minutes wall time and <= 6 GB peak memory.

Usage: python benchmarks/train_accuracy.py [--data DIR] [--seeds 0 1 2] [--protocols original official]
Writes benchmarks/results/train_accuracy.json after every run (partial results survive).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_option, machine, write  # noqa: E402


def run_one(data: str, protocol: str, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "braintumor", "train", "--data", data, "--protocol", protocol, "--seed", str(seed),
           "--out", str(out), "--overwrite", "--json", "-q", *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    if status != 0:
        raise SystemExit(f"training failed (status {status}) for {protocol} seed {seed}")
    return run_record(protocol, seed, json.loads(stdout), out, round(wall, 1), round(usage.ru_maxrss / 1024**2, 3))


def run_record(protocol: str, seed: int, metrics: dict, out: Path, wall_s: float | None, peak_rss_gb: float | None) -> dict:
    """One run's entry in the results: its test metrics, epochs and best validation accuracy
    (from ``metrics.jsonl``), and its wall time and peak memory when they were measured."""
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "protocol": protocol,
        "seed": seed,
        "accuracy": metrics["accuracy"],
        "correct": metrics["correct"],
        "n": metrics["n"],
        "macro_f1": metrics["macro_f1"],
        "loss": metrics["loss"],
        "epochs_run": len(history),
        "best_val_acc": max(h["val_acc"] for h in history),
        "wall_s": wall_s,
        "peak_rss_gb": peak_rss_gb,
        "run_dir": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_option(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=["original", "official"])
    parser.add_argument("--runs", default="runs/bench", help="where the run directories go")
    parser.add_argument("--output", default="train_accuracy.json")
    parser.add_argument("extra", nargs="*", help="extra `braintumor train` options after --")
    args = parser.parse_args()

    result: dict = {"machine": machine(), "command": " ".join(sys.argv), "runs": {}}
    for protocol in args.protocols:
        seeds = args.seeds if protocol == "original" else args.seeds[:1]
        for seed in seeds:
            out = Path(args.runs) / f"{protocol}-seed{seed}"
            result["runs"].setdefault(protocol, []).append(run_one(args.data, protocol, seed, out, args.extra))
            summarise(result)
            write(args.output, result)
    print(json.dumps(result["summary"], indent=2))


def summarise(result: dict) -> None:
    runs = [r for rs in result["runs"].values() for r in rs]
    summary = {}
    for protocol, rs in result["runs"].items():
        acc = np.array([r["accuracy"] for r in rs])
        f1 = np.array([r["macro_f1"] for r in rs])
        summary[protocol] = {
            "seeds": [r["seed"] for r in rs],
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "macro_f1_mean": float(f1.mean()),
        }
    summary["max_wall_min"] = max(r["wall_s"] for r in runs) / 60
    summary["max_peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    targets = {"time_le_15_min": summary["max_wall_min"] <= 15, "memory_le_6_gb": summary["max_peak_rss_gb"] <= 6}
    if "original" in summary:
        targets["original_accuracy_ge_98.5"] = summary["original"]["accuracy_mean"] >= 0.985
    summary["targets_met"] = targets
    result["summary"] = summary


if __name__ == "__main__":
    main()
