"""Data-parallel training with torchrun (gloo on loopback, CPU only): two processes take the same
steps as one, write one set of files, resume across world sizes, and a failing rank ends the job.

Every run here is a subprocess with one thread per process: multithreaded CPU kernels sum in an
order that depends on the thread count, and Adam turns such last-bit differences in near-zero
gradients into visible ones. With equal thread counts the runs agree bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

RECIPE = ["--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--batch-size", "8",
          "--micro-batch", "4", "--drop-rate", "0.2", "--epochs", "1", "-q", "--json"]


def _train(args: list[str], cache: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BRAINTUMOR_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "braintumor", "train", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _max_difference(a: Path, b: Path) -> float:
    """The largest difference between two checkpoints' network weights and batch-norm statistics
    (not the out-of-distribution statistics fitted after training: on 22 tiny images their
    whitening inverts a nearly singular covariance, which magnifies last-bit differences)."""
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first if not k.startswith("extra:"))


def test_two_processes_train_as_one_write_once_and_resume_in_either_world_size(distinct_tree, tmp_path, monkeypatch):
    """One epoch in one process and in two (gloo, loopback); each then resumed for a second epoch
    in the other world size. (One test, not several sharing a fixture: pytest-xdist would run
    such a fixture once per worker.)"""
    from braintumor.evaluation import evaluate

    cache, data = tmp_path / "cache", ["--data", str(distinct_tree)]
    one, two = tmp_path / "one", tmp_path / "two"
    first = _train([*data, *RECIPE, "--out", str(one), "--no-test"], cache)
    assert first.returncode == 0, first.stderr
    both = _train([*data, *RECIPE, "--out", str(two), "--nproc", "2"], cache)
    assert both.returncode == 0, both.stderr
    assert "2 processes" in both.stderr

    # The same steps: the network's weights and batch-norm statistics, and the epoch's figures.
    for name in ("last.safetensors", "model.safetensors"):
        assert _max_difference(one / name, two / name) <= 1e-5
    one_epoch, two_epoch = (json.loads((r / "metrics.jsonl").read_text()) for r in (one, two))
    assert one_epoch["train_loss"] == pytest.approx(two_epoch["train_loss"], abs=1e-5)
    assert one_epoch["val_loss"] == pytest.approx(two_epoch["val_loss"], abs=1e-5)

    # One set of files, written by rank 0: what one process writes, plus the test report.
    assert {p.name for p in one.iterdir()} <= {p.name for p in two.iterdir()}
    assert {"report.md", "test_metrics.json"} <= {p.name for p in two.iterdir()}
    assert not [p for p in two.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 1  # one line per epoch, not one per rank
    printed = json.loads(both.stdout)  # one JSON document: printed once, by rank 0

    # The test split, sharded and gathered: the figures of evaluating the checkpoint in one process.
    monkeypatch.setenv("BRAINTUMOR_CACHE", str(cache))
    alone = evaluate(two / "model.safetensors", out=tmp_path / "alone", progress=False)
    assert printed["n"] == alone["n"] == len(json.loads((two / "split.json").read_text())["test"])
    assert printed["correct"] == alone["correct"] and printed["confusion_matrix"] == alone["confusion_matrix"]
    assert printed["loss"] == pytest.approx(alone["loss"], abs=1e-6)

    # Resumed in the other world size: epoch 2 in two processes (after one) and in one (after two).
    for run, extra in ((one, ["--nproc", "2"]), (two, [])):
        resumed = _train(["--out", str(run), "--resume", "--epochs", "2", "--no-test", "-q", *extra], cache)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stderr
        assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert _max_difference(one / "last.safetensors", two / "last.safetensors") <= 1e-5


def test_a_failing_rank_ends_the_job_with_its_error(distinct_tree, tmp_path):
    script = Path(__file__).with_name("failing_rank.py")
    code = ("import sys; from braintumor.distributed import launch; "
            f"sys.exit(launch(2, sys.argv[1:], entry=({str(script)!r},)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BRAINTUMOR_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, "train", "--data", str(distinct_tree), *RECIPE[:-4], "-q",
                             "--epochs", "3", "--out", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    assert time.monotonic() - started < 120
    assert "error: planted failure on rank 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()


def test_micro_batches_do_not_depend_on_the_world_size():
    import torch

    from braintumor.training import TrainConfig
    from braintumor.training.trainer import micro_batches

    rows = torch.arange(32)
    config = TrainConfig(data="x", batch_size=32, micro_batch=8)
    for world in (1, 2, 4):
        assert [len(p) for p in micro_batches(rows, config, world)] == [8, 8, 8, 8]
    plain = TrainConfig(data="x", batch_size=32)
    assert [len(p) for p in micro_batches(rows, plain, 1)] == [32]  # one process: one batch, as always
    assert [len(p) for p in micro_batches(rows, plain, 2)] == [16, 16]
    assert [len(p) for p in micro_batches(torch.arange(5), config, 2)] == [3, 2]  # a short last batch: two each at least
    assert np.array_equal(torch.cat(micro_batches(rows, config, 3)).numpy(), rows.numpy())  # every row once, in order


def test_shards_cover_every_item_once(monkeypatch):
    from braintumor import distributed

    for n in (0, 1, 5, 64):
        for world in (1, 2, 3, 8):
            monkeypatch.setattr(distributed, "world_size", lambda world=world: world)
            covered = []
            for r in range(world):
                monkeypatch.setattr(distributed, "rank", lambda r=r: r)
                covered.extend(range(n)[distributed.shard(n)])
            assert covered == list(range(n))


def test_nproc_is_checked_and_torchrun_settings_named(tmp_path, capsys):
    from braintumor.cli import main

    assert main(["train", "--data", str(tmp_path), "--nproc", "0"]) == 2
    assert "--nproc" in capsys.readouterr().err
