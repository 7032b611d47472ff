"""Data-parallel training with torchrun (gloo on loopback, CPU only): two processes take the same
steps as one, write one set of files, resume across world sizes, and a failing rank ends the job.

Every run here is a subprocess with one thread per process: multithreaded CPU kernels sum in an
order that depends on the thread count, and Adam turns such last-bit differences in near-zero
gradients into visible ones. With equal thread counts the runs agree bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.xdist_group("distributed")  # (the runs are shared: one worker takes them all)

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


@pytest.fixture(scope="module")
def runs(distinct_tree, tmp_path_factory):
    """One epoch in one process and in two; then each resumed for a second epoch in the other
    world size."""
    root = tmp_path_factory.mktemp("ddp")
    cache = root / "cache"
    data = ["--data", str(distinct_tree)]
    done = {}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        done[name] = _train([*data, *RECIPE, "--out", str(root / name), *extra], cache)
        assert done[name].returncode == 0, done[name].stderr
    for name in ("one", "two"):  # copies, so that the one-epoch folders stay as they were
        shutil.copytree(root / name, root / f"{name}-resumed", ignore=shutil.ignore_patterns(".lock"))
    for name, extra in (("one-resumed", ["--nproc", "2"]), ("two-resumed", [])):
        done[name] = _train(["--out", str(root / name), "--resume", "--epochs", "2", "-q", "--json", *extra], cache)
        assert done[name].returncode == 0, done[name].stderr
    return root, done


def test_two_processes_take_the_same_steps_as_one(runs):
    root, done = runs
    assert "2 processes" in done["two"].stderr
    for name in ("last.safetensors", "model.safetensors"):
        assert _max_difference(root / "one" / name, root / "two" / name) <= 1e-5
    one, two = (json.loads((root / r / "metrics.jsonl").read_text()) for r in ("one", "two"))
    assert one["train_loss"] == pytest.approx(two["train_loss"], abs=1e-5)
    assert one["val_loss"] == pytest.approx(two["val_loss"], abs=1e-5)


def test_only_rank_zero_writes_one_set_of_files(runs):
    root, done = runs
    one, two = root / "one", root / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not [p for p in two.iterdir() if p.name.endswith(".tmp")]
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 1  # one line per epoch, not one per rank
    printed = json.loads(done["two"].stdout)  # one JSON document: printed once, by rank 0
    assert printed.keys() == json.loads(done["one"].stdout).keys()


def test_the_test_split_is_evaluated_once_as_in_one_process(runs, monkeypatch):
    from braintumor.evaluation import evaluate

    root, done = runs
    monkeypatch.setenv("BRAINTUMOR_CACHE", str(root / "cache"))
    gathered = json.loads((root / "two" / "test_metrics.json").read_text())
    alone = evaluate(root / "two" / "model.safetensors", out=root / "alone", progress=False)
    assert gathered["n"] == alone["n"] and gathered["correct"] == alone["correct"]
    assert gathered["confusion_matrix"] == alone["confusion_matrix"]
    assert gathered["loss"] == pytest.approx(alone["loss"], abs=1e-6)
    split = json.loads((root / "two" / "split.json").read_text())
    assert gathered["n"] == len(split["test"])  # no image counted twice, none dropped


def test_a_run_resumes_in_another_world_size(runs):
    root, done = runs
    for name in ("one-resumed", "two-resumed"):
        assert "resuming" in done[name].stderr
        assert [json.loads(line)["epoch"] for line in (root / name / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # Both trained epoch 1 alike; epoch 2 in two processes (one-resumed) and in one (two-resumed).
    assert _max_difference(root / "one-resumed" / "last.safetensors", root / "two-resumed" / "last.safetensors") <= 1e-5


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
