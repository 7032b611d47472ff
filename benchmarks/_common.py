"""Shared by the benchmark scripts: machine description and JSON writing."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.is_available(),
    }


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def median_ms(call, items) -> tuple[float, float]:
    """Median and 90th percentile, in milliseconds, of ``call(item)`` over `items`."""
    import statistics
    import time

    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[int(0.9 * (len(times) - 1))]


def time_predictor(predictor, files: list, repeats: int, single: int, batch_size: int = 32) -> dict:
    """Time a `braintumor.inference.predictor.Predictor` (already warmed up) the way the targets are stated.

    Returns ``images_per_s`` (the median of `repeats` passes of ``predictor.predict(files)``),
    ``passes_per_s`` (each pass), ``single_ms_median`` and ``single_ms_p90`` (one file per call,
    over the first `single` files) and ``results`` (the last pass's predictions).
    """
    import statistics
    import time

    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = predictor.predict(files, batch_size=batch_size)
        rates.append(len(files) / (time.perf_counter() - start))
    median, p90 = median_ms(lambda f: predictor.predict([f]), files[:single])
    return {"images_per_s": statistics.median(rates), "passes_per_s": rates, "single_ms_median": median,
            "single_ms_p90": p90, "results": results}


def run_and_split(run: Path, data: str):
    """A training run's best checkpoint, the decoded images of its data and its split.

    The images and split come from `braintumor.data.protocols.load_run`: the data's fingerprint
    checked against the checkpoint's, the split re-created from the run's stored config.
    Returns ``(model, info, images, readable dataset, split)``; a data error ends the script with
    its message.
    """
    from braintumor.model.checkpoint import load_checkpoint
    from braintumor.errors import BrainTumorError
    from braintumor.data.protocols import load_run

    checkpoint = Path(run) / "model.safetensors"
    model, info = load_checkpoint(checkpoint)
    try:
        images, found, split = load_run(checkpoint, info, data)
    except BrainTumorError as exc:
        raise SystemExit(f"{run}: {exc}") from None
    return model, info, images, found, split


def full_validation(found, info, split):
    """A run's validation indices as its split gives them without ``train --exclude``: a run that
    excluded images trained on none of these (an excluded image leaves training too), so it can be
    scored on the same validation images as runs without exclusions."""
    from braintumor.data.protocols import run_split

    cfg = info.train_config
    return run_split(found, {**cfg, "exclude": []}).val if cfg.get("exclude") else split.val


def run_validation_set(run: Path, data: str):
    """A training run's best checkpoint and its validation images and labels (see `run_and_split`).

    Returns ``(model, info, images, labels)``.
    """
    model, info, images, found, split = run_and_split(run, data)
    return model, info, images[split.val], found.labels[split.val]


def history(run: Path) -> list[dict]:
    """A training run's per-epoch records (its ``metrics.jsonl``; empty without one)."""
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def epochs_run(run: Path) -> int:
    """Epochs a training run trained. Under the time limit a run on a slower or busier machine
    trains fewer, whatever its recipe."""
    return len(history(run))


def best_val_acc(run: Path, epochs: int) -> float:
    """Best in-loop validation accuracy (no test-time view) over a run's first `epochs` epochs:
    what the run would have kept had it stopped there. Comparing two runs at the same `epochs`
    takes the time limit's share out of a recipe comparison."""
    return max(record["val_acc"] for record in history(run)[:epochs])


def data_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--data``, defaulting as the package does (`braintumor.data.dataset.default_data_dir`)."""
    from braintumor.data.dataset import default_data_dir

    parser.add_argument("--data", default=str(default_data_dir()),
                        help="dataset folder (default: $BRAINTUMOR_DATA, else ../shared/data/sartaj)")


def runs_parser(doc: str, output: str) -> argparse.ArgumentParser:
    """The command line of a script that scores finished runs: ``RUN_DIR ... [--data DIR] [--output NAME]``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories written by `braintumor train`")
    data_option(parser)
    parser.add_argument("--output", default=output, help="results file name in benchmarks/results/")
    return parser


def nll_sum(probs, labels) -> float:
    """Summed negative log-likelihood of `labels` under probabilities `probs`: the package's
    `braintumor.metrics.calibration.nll` (a mean) times the number of images."""
    from braintumor.metrics.calibration import as_logits, nll

    return nll(as_logits(probs), labels) * len(labels)


def add_score(pooled: dict, key, correct: int, nll: float, n: int) -> dict:
    """Add one run's (correct, summed NLL) over `n` images to ``pooled[key]``; return the run's figures."""
    pooled[key][0] += correct
    pooled[key][1] += nll
    return {"correct": correct, "accuracy": round(correct / n, 4), "nll": round(nll / n, 4)}


def pooled_summary(pooled: dict, total: int, label) -> dict:
    """``{key: [correct, summed NLL]}`` over `total` images → accuracy and mean NLL per key,
    each printed as one line headed ``label(key)``."""
    summary = {key: {"correct": c, "n": total, "accuracy": round(c / total, 4), "nll": round(s / total, 4)}
               for key, (c, s) in pooled.items()}
    for key, s in summary.items():
        print(f"{label(key)}: {s['correct']}/{s['n']} = {100 * s['accuracy']:.2f}%, NLL {s['nll']:.4f}")
    return summary


def pair_runs(baseline: list, candidate: list, score) -> list[tuple]:
    """Pair each candidate run with the baseline run of the same protocol and split seed.

    `score(run)` returns ``(key, *figures)`` with key ``(protocol, seed)``; the result is one
    ``(key, (baseline_run, *figures), (candidate_run, *figures))`` per candidate. A candidate
    without a baseline of its key ends the script with a message naming it.
    """
    scored = {}
    for run in baseline:
        key, *figures = score(run)
        scored[key] = (run, *figures)
    pairs = []
    for run in candidate:
        key, *figures = score(run)
        if key not in scored:
            raise SystemExit(f"{run}: no baseline run with protocol {key[0]} and split seed {key[1]}")
        pairs.append((key, scored[key], (run, *figures)))
    return pairs


def seed_groups(seed: int, groups) -> list[str]:
    """Near-duplicate group ids made unique across split seeds, for pooling the images of several
    seeds in one paired bootstrap (a group is a group within one seed's images)."""
    return [f"{seed}/{g}" for g in groups]
