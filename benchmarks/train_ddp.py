"""Data-parallel training on one machine: the same command in one process and in N (torchrun,
``braintumor train --nproc N``), their throughput and whether they take the same steps.

Issue 40's CPU target: 2 gloo processes on 2 cores give the same result as 1, and the benchmark
reports the throughput of both. Three runs of the same recipe on the same images:

- ``one_process``: 1 process with every core (what a plain ``braintumor train`` does);
- ``one_process_one_thread``: 1 process, 1 thread per process as in the next run;
- ``n_processes``: N processes, the cores shared out (1 thread each on 2 cores).

The weights of the last two are compared (equal thread counts give the same arithmetic); the
first differs from them only by the order in which multithreaded kernels sum. Throughput is each
run's training images per second over its epochs (validation and decoding left out), from its
``metrics.jsonl``.

Usage: python benchmarks/train_ddp.py [--data ../shared/data/sartaj] [--nproc 2] [--epochs 2]
           [--train-fraction 0.25] [--image-size 160] [--device cpu] [--output NAME]
Writes benchmarks/results/train_ddp.json (or NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402


def run(name: str, args: list[str], threads: int, nproc: int, folder: Path) -> dict:
    """One ``braintumor train`` in `nproc` processes of `threads` threads; its figures."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BRAINTUMOR_CACHE": str(folder / "cache")}
    out = folder / name
    command = [sys.executable, "-m", "braintumor", "train", *args, "--out", str(out), "--no-test", "-q", "--json"]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{name} failed:\n{result.stderr}")
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    figures = {"processes": nproc, "threads_per_process": threads, "wall_s": round(time.perf_counter() - started, 1),
               "train_images_per_s": [e["train_images_per_s"] for e in epochs],
               "train_loss": [round(e["train_loss"], 6) for e in epochs], "val_acc": [e["val_acc"] for e in epochs]}
    print(f"{name}: {figures}", flush=True)
    return figures


def max_difference(a: Path, b: Path) -> float:
    """Largest difference between two checkpoints' network weights and batch-norm statistics."""
    first, second = load_file(a), load_file(b)
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first if not k.startswith("extra:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/sartaj")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-fraction", type=float, default=0.25)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="train_ddp.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    recipe = ["--data", args.data, "--epochs", str(args.epochs), "--train-fraction", str(args.train_fraction),
              "--image-size", str(args.image_size), "--low-res-scale", "1", "--batch-size", str(args.batch_size),
              "--micro-batch", str(args.batch_size // args.nproc), "--device", args.device]
    with tempfile.TemporaryDirectory(prefix="train_ddp_") as tmp:
        folder = Path(tmp)
        runs = {"one_process": run("one_process", recipe, cores, 1, folder),
                "one_process_one_thread": run("one_process_one_thread", recipe, max(1, cores // args.nproc), 1, folder),
                "n_processes": run("n_processes", recipe, max(1, cores // args.nproc), args.nproc, folder)}
        difference = max_difference(folder / "one_process_one_thread" / "last.safetensors",
                                    folder / "n_processes" / "last.safetensors")
        threads_difference = max_difference(folder / "one_process" / "last.safetensors",
                                            folder / "n_processes" / "last.safetensors")
    rate = {name: r["train_images_per_s"][-1] for name, r in runs.items()}
    result = {
        "machine": machine(),
        "command": "benchmarks/train_ddp.py " + " ".join(sys.argv[1:]),
        "recipe": recipe,
        "runs": runs,
        "max_weight_difference_n_processes_vs_one_at_equal_threads": difference,
        "max_weight_difference_n_processes_vs_one_with_every_core": threads_difference,
        "speedup_n_processes_over_one_process": round(rate["n_processes"] / rate["one_process"], 2),
        "targets_met": {"same_result_within_1e-5": difference <= 1e-5},
    }
    print(f"{write(args.output, result)}: weights differ by at most {difference:.3g}; "
          f"{rate['n_processes']} vs {rate['one_process']} training images/s")


if __name__ == "__main__":
    main()
