"""What one ``braintumor predict IMAGE`` costs from a fresh process: wall time, start-up
included, and peak memory (resident set).

This is what a person or a script that calls the command once per file waits for, on top of
the in-process figures of `predict_speed.py`. Three cases, each run ``--repeats`` times after
one discarded warm-up (which fills the operating system's file cache):

- ``onnx_cached``: onnxruntime with the checkpoint's graph already cached, the usual case after
  the first use; PyTorch is not imported;
- ``onnx_first_use``: onnxruntime with an empty cache, so the graph is exported with PyTorch
  first (each repeat gets a new, empty ``BRAINTUMOR_CACHE``);
- ``torch``: ``--runtime torch``.

Usage: python benchmarks/startup_speed.py [--model PATH] [--image FILE] [--repeats 5] [--output NAME]
Writes benchmarks/results/startup_speed.json (or NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

import braintumor  # noqa: E402
from braintumor.data.dataset import default_data_dir  # noqa: E402
from braintumor.data.imageio import is_image_file  # noqa: E402

# Runs one command and prints its peak resident memory: the wrapper's only child is that command.
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_once(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak resident megabytes of `command` in a new process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - start
    code, kilobytes = done.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(command)} exited with {code}")
    return wall, int(kilobytes) / 1024


def source_commit() -> str | None:
    """The git commit of the braintumor code that runs (PYTHONPATH can point at another checkout)."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(braintumor.__file__).parent, capture_output=True, text=True)
    return done.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--image", help="the slice to predict (default: the first of the Testing folder of $BRAINTUMOR_DATA)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (the median is reported)")
    parser.add_argument("--output", default="startup_speed.json", help="results file name in benchmarks/results/")
    args = parser.parse_args()

    image = Path(args.image) if args.image else next(p for p in sorted((default_data_dir() / "Testing").rglob("*"))
                                                      if p.is_file() and is_image_file(p))
    base = [sys.executable, "-m", "braintumor", "predict", str(image), "--json", "-q"]
    base += ["--model", args.model] if args.model else []
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm_cache = {**os.environ, "BRAINTUMOR_CACHE": str(Path(tmp) / "warm")}
        for name, extra in [("onnx_cached", ["--runtime", "onnx"]), ("onnx_first_use", ["--runtime", "onnx"]),
                            ("torch", ["--runtime", "torch"])]:
            runs = []
            for repeat in range(args.repeats + 1):
                env = warm_cache
                if name == "onnx_first_use":
                    env = {**os.environ, "BRAINTUMOR_CACHE": str(Path(tmp) / f"empty{repeat}")}
                runs.append(run_once(base + extra, env))
            runs = runs[1:]  # the warm-up (for onnx_cached it also fills the cache) is left out
            cases[name] = {
                "wall_s_median": round(statistics.median(w for w, _ in runs), 3),
                "wall_s": [round(w, 3) for w, _ in runs],
                "peak_rss_mb_median": round(statistics.median(m for _, m in runs), 1),
            }
            print(f"{name:15s} {cases[name]['wall_s_median']:6.2f} s  {cases[name]['peak_rss_mb_median']:7.1f} MB")
    path = write(args.output, {
        "machine": machine(),
        "command": " ".join(["benchmarks/startup_speed.py", *sys.argv[1:]]),
        "predicted": " ".join(["braintumor predict", image.name, "--json -q"] + (["--model", args.model] if args.model else [])),
        "braintumor_commit": source_commit(),
        "repeats": args.repeats,
        "cases": cases,
    })
    print(json.dumps(cases, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
