"""Benchmark of the ``mri-from-scratch`` lesson against issue 5's targets.

Trains the NumPy CNN on the brain MRI data under the ``original`` protocol (seed 0), scores the
test split once, and writes accuracy, wall time, peak memory and the machine's description to
``benchmarks/results/mri_from_scratch.json``. Targets: test accuracy >= 85% within 15 minutes on
2 CPU cores, peak memory <= 4 GB.

Usage::

    python benchmarks/mri_from_scratch.py [--data DIR] [--note TEXT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "mri_from_scratch.json"


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def peak_memory_gb() -> float:
    """Peak resident memory of this process (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: $BRAINTUMOR_DATA, else ../shared/data/sartaj)")
    parser.add_argument("--out", default="runs/lessons/mri-from-scratch", help="lesson output folder (figure, report)")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (default: 0)")
    parser.add_argument("--note", default="", help="free text stored with the result (e.g. other load on the machine)")
    args = parser.parse_args(argv)

    import numpy as np

    from braintumor.fundamentals.lessons import run_lesson

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_lesson("mri-from-scratch", args.out, data=args.data, seed=args.seed, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_memory_gb()
    test = result["test"]
    record = {
        "benchmark": "mri-from-scratch (issue 5)",
        "date_utc": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": package_version("torch"),
            "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "nice": os.nice(0),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "protocol": result["protocol"],
        "seed": args.seed,
        "split_sizes": result["split_sizes"],
        "config": result["config"],
        "accuracy": test["accuracy"],
        "correct": test["correct"],
        "n_test": test["n"],
        "macro_f1": test["macro_f1"],
        "best_val_accuracy": result["best_val_accuracy"],
        "epochs_run": result["epochs_run"],
        "best_epoch": result["best_epoch"],
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "train_seconds": result["train_seconds"],
        "train_cpu_seconds": result["history"][-1]["cpu_seconds"],
        "data_load_seconds": result["load_seconds"],
        "peak_memory_gb": peak,
        "comparison": result["comparison"],
        "targets": {"accuracy_min": 0.85, "wall_seconds_max": 900, "peak_memory_gb_max": 4.0},
        # CPU time is what the run would take on an idle machine (NumPy runs on one thread);
        # the wall time also counts waiting for the CPU when other jobs share the machine
        "meets_targets": {"accuracy": test["accuracy"] >= 0.85, "wall_time": wall <= 900, "cpu_time": cpu <= 900,
                          "peak_memory": peak <= 4.0},
        "note": args.note,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(result["comparison_table"])
    print(f"test accuracy {100 * test['accuracy']:.2f}% ({test['correct']}/{test['n']}), wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min, "
          f"peak memory {peak:.2f} GB -> {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
