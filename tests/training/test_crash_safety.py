"""A training run killed at any point resumes to the same weights; two runs on one folder do not
mix; a full or read-only disk and a diverging loss stop a run with one clear message."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from braintumor import files
from braintumor.errors import BrainTumorError
from diskfaults import failing_disk, fill, read_only_folder, small_disk  # noqa: F401 (fixtures)
from synthetic import make_tree

DRIVER = Path(__file__).with_name("crashing.py")


class Driver:
    """The ``crashing.py`` process: forks training runs that kill themselves at chosen points."""

    def __init__(self, folder: Path):
        self.stderr = folder / "driver.err"
        env = {**os.environ, "BRAINTUMOR_CACHE": str(folder / "cache")}
        self.proc = subprocess.Popen([sys.executable, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr.open("w"), text=True, env=env)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}, self.errors()

    def start(self, config: dict, points=(), log: Path | None = None) -> int:
        request = {"config": config, "points": list(points), "log": str(log or os.devnull)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def run(self, config: dict, points=(), log: Path | None = None) -> dict:
        self.start(config, points, log)
        return self.wait()

    def errors(self) -> str:
        return self.stderr.read_text()[-3000:]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = Driver(tmp_path_factory.mktemp("driver"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("crash") / "data")


def tiny(data: Path, out: Path, **changes) -> dict:
    """A run of a few seconds: 32 px, a tiny random network, one thread."""
    return {**dict(data=str(data), out=str(out), backbone="test_efficientnet", pretrained=False, image_size=32, epochs=3,
                   batch_size=8, threads=1, progress=False), **changes}


OK = {"signal": 0, "code": 0}
KILLED = 9

# Each reached from where the one before left the run folder, so each lands where it says.
FIRST_KILLS = [
    ["write", "config.json", 1, "partial"],  # during the very first write: only a temporary and a lock file left
    ["write", "config.json", 1, "after"],  # the settings recorded, nothing else
    ["write", "split.json", 1, "partial"],
    ["step", 3],  # in the first epoch: before the first checkpoint
    ["write", "model.safetensors", 1, "partial"],  # during the first checkpoint
    ["write", "last_state.pt", 1, "partial"],  # during the first state write, the checkpoints written
]
RUN_FILES_WRITTEN = ("config.json", "split.json", "metrics.jsonl", "model.safetensors", "model.json", "last.safetensors",
                     "last.json", "last_state.pt")


def kill_schedule(rng: random.Random) -> list[list]:
    """Twenty kill points: the first ones fixed, ten drawn at random (each with a backstop, so
    that a point a run does not reach still kills it), then the end of training: the fits after
    it, and the final checkpoint's write."""
    backstop = [["step", 10], ["posthoc"]]
    middle = []
    for _ in range(10):
        if rng.random() < 0.4:
            point = ["step", rng.randint(1, 10)]
        else:
            name = rng.choice(RUN_FILES_WRITTEN)
            point = ["write", name, 2 if name == "metrics.jsonl" else 1, rng.choice(["partial", "after"])]
        middle.append([point, *backstop])
    ending = [[["write", "last_state.pt", 2, "after"], ["posthoc"]]] * 2  # three epochs done by then, whatever came before
    return [[p] for p in FIRST_KILLS] + middle + ending + [[["posthoc"]], [["write", "model.safetensors", 1, "partial"]]]


def network(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def reference(driver, data, tmp_path_factory) -> Path:
    """An uninterrupted run of `tiny`, trained in a child of the driver like the killed ones."""
    out = tmp_path_factory.mktemp("reference") / "run"
    started = time.monotonic()
    assert driver.run(tiny(data, out)) == OK, driver.errors()
    (out.parent / "seconds").write_text(str(time.monotonic() - started))
    return out


def _same_run(out: Path, reference: Path) -> None:
    expected, resumed = network(reference / "model.safetensors"), network(out / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(np.array_equal(expected[k], resumed[k]) for k in expected), "a resumed run must be bit-exact"
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    reference_info, info = (json.loads((folder / "model.json").read_text()) for folder in (reference, out))
    assert info["temperature"] == reference_info["temperature"] and info["metrics"]["best_epoch"] == reference_info["metrics"]["best_epoch"]
    leftovers = [p.name for p in out.iterdir() if files.is_temporary(p) or p.name == files.LOCK_NAME]
    assert leftovers == []


def test_twenty_kills_at_any_point_each_resumed_end_with_the_weights_of_an_uninterrupted_run(driver, data, reference,
                                                                                            tmp_path):
    out, log = tmp_path / "run", tmp_path / "kills.log"
    schedule = kill_schedule(random.Random(0))
    assert len(schedule) == 20
    for points in schedule:
        result = driver.run(tiny(data, out, resume=True), points, log)
        assert result["signal"] == KILLED, (points, result, driver.errors())
    assert driver.run(tiny(data, out, resume=True)) == OK, driver.errors()

    landed = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(landed) == 20 and landed[:6] == FIRST_KILLS and landed[-2:] == [["posthoc"], schedule[-1][0]]
    _same_run(out, reference)


def test_kills_at_random_moments_from_outside_then_the_same_weights(driver, data, reference, tmp_path):
    # kill -9 from another process after a random delay, a share of an uninterrupted run's time:
    # wherever the run happens to be. Once it has finished, a resume just says so.
    rng = random.Random(1)
    seconds = float((reference.parent / "seconds").read_text())
    out, landed = tmp_path / "run", 0
    for _ in range(20):
        pid = driver.start(tiny(data, out, resume=True))
        time.sleep(rng.uniform(0.02, 0.25) * seconds)  # short enough that most land before the run ends
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        result = driver.wait()
        assert result in (OK, {"signal": KILLED, "code": None}), (result, driver.errors())
        landed += result["signal"] == KILLED
    assert driver.run(tiny(data, out, resume=True)) == OK, driver.errors()
    assert landed >= 10, landed  # (all twenty, as a rule)
    _same_run(out, reference)


def test_a_run_killed_before_its_first_checkpoint_resumes_with_its_recorded_settings(driver, data, tmp_path, capsys):
    from braintumor.cli import main
    from braintumor.training.runfolder import stored_config

    out = tmp_path / "run"
    config = tiny(data, out, seed=4, epochs=1)
    assert driver.run(config, [["step", 2]])["signal"] == KILLED, driver.errors()
    assert not (out / "last_state.pt").exists()
    assert stored_config(out)["seed"] == 4 and stored_config(out)["image_size"] == 32
    # only --out and --resume: the data, seed, size and network come from the run's config.json
    assert main(["train", "--out", str(out), "--resume", "--no-test", "-q"]) == 0, capsys.readouterr().err
    assert "restarting" in capsys.readouterr().err
    trained = json.loads((out / "model.json").read_text())["train_config"]
    assert (trained["seed"], trained["image_size"], trained["backbone"], trained["data"]) == (4, 32, "test_efficientnet", str(data))


@pytest.mark.parametrize("seeds", [(0, 0), (0, 1)], ids=["same seed", "other seed"])
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(driver, data, tmp_path, capsys, seeds):
    from braintumor.cli import main
    from braintumor.training.trainer import TrainConfig, train

    out, go = tmp_path / "run", tmp_path / "go"
    pid = driver.start(tiny(data, out, seed=seeds[0], epochs=2), [["wait", 2, str(go)]])
    try:
        while not (out / "split.json").exists():  # the first run is training (and waits at its second step)
            assert driver.proc.poll() is None
            time.sleep(0.05)
        with pytest.raises(BrainTumorError) as refused:
            train(TrainConfig(**tiny(data, out, seed=seeds[1], epochs=2)))
        assert f"pid {pid}" in refused.value.message and "in use by another braintumor process" in refused.value.message
        args = ["train", "--data", str(data), "--out", str(out), "--seed", str(seeds[1]), "--image-size", "32",
                "--epochs", "2", "--resume", "--no-test", "-q"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"error: {out} is in use by another braintumor process (pid {pid}" in err and "hint:" in err
        assert "Traceback" not in err
    finally:
        go.touch()
    assert driver.wait() == OK, driver.errors()
    # the first run's files are its own, consistent with each other
    split = json.loads((out / "split.json").read_text())
    config = json.loads((out / "config.json").read_text())["config"]
    model = json.loads((out / "model.json").read_text())
    assert split["seed"] == config["seed"] == model["train_config"]["seed"] == seeds[0]
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / files.LOCK_NAME).exists()


def _inject_nan(monkeypatch, at_step: int, weights: bool = False):
    """Make the loss (or, with `weights`, a weight) of training step `at_step` non-finite."""
    import braintumor.training.trainer as trainer

    real = trainer.batch_loss
    steps = [0]

    def batch_loss(model, *args, **kwargs):
        steps[0] += 1
        logits, loss = real(model, *args, **kwargs)
        if steps[0] == at_step:
            if not weights:
                return logits, loss * float("nan")
            parameter = next(model.parameters())
            parameter.data.fill_(float("inf"))  # (.data: not an in-place change autograd's backward would refuse)
        return logits, loss

    monkeypatch.setattr(trainer, "batch_loss", batch_loss)


def test_a_diverging_loss_stops_the_run_at_once_keeping_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    from braintumor.cli import main
    from braintumor.model.checkpoint import load_checkpoint

    out = tmp_path / "run"
    _inject_nan(monkeypatch, at_step=7)  # five steps an epoch: in the second epoch
    code = main(["train", "--data", str(data), "--out", str(out), "--backbone", "test_efficientnet", "--no-pretrained",
                 "--image-size", "32", "--batch-size", "8", "--epochs", "3", "--threads", "1", "--no-test", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "error: training diverged at epoch 2 step 7 (loss nan)" in err, err
    assert "hint: lower --lr" in err and "epoch 1, the last good one, is kept" in err and "Traceback" not in err
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert state["epoch"] == 1
    model, _ = load_checkpoint(out / "model.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [p.name for p in out.iterdir() if files.is_temporary(p)] == []


def test_the_highest_rate_and_decay_the_options_allow_blow_up_and_are_stopped(data, tmp_path, capsys):
    from braintumor.cli import main

    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(out), "--backbone", "test_efficientnet", "--no-pretrained",
                 "--image-size", "32", "--batch-size", "8", "--epochs", "4", "--lr", "1", "--weight-decay", "10",
                 "--threads", "1", "--no-test", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "error: training diverged at epoch " in err and "hint: lower --lr (now 1)" in err, err
    done = torch.load(out / "last_state.pt", weights_only=True)["epoch"] if (out / "last_state.pt").exists() else 0
    assert done < 4 and all(r["train_loss"] < 1e3 for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()))


def test_non_finite_weights_stop_the_run_before_a_checkpoint_is_written(data, tmp_path, monkeypatch):
    from braintumor.training.trainer import TrainConfig, train
    from braintumor.training.runfolder import TrainingDiverged

    _inject_nan(monkeypatch, at_step=5, weights=True)  # the last step of the first epoch: no loss sees it
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1 step 5 \(non-finite weights in ") as caught:
        train(TrainConfig(**tiny(data, tmp_path / "run")))
    assert "no checkpoint was written" in caught.value.hint
    assert not (tmp_path / "run" / "model.safetensors").exists() and not (tmp_path / "run" / "last_state.pt").exists()


def test_a_full_disk_during_training_keeps_the_last_epoch_and_the_run_resumes_once_space_is_freed(
        data, tmp_path, failing_disk):
    from braintumor.files import OutputError
    from braintumor.training.trainer import TrainConfig, train

    out = tmp_path / "run"
    failing_disk(limit=1000, name="last_state.pt", occurrence=2)  # the disk fills while the second epoch's state is written
    with pytest.raises(OutputError) as caught:
        train(TrainConfig(**tiny(data, out)))
    assert caught.value.message.startswith(f"cannot write {out / 'last_state.pt'}: no space left on the device")
    assert "--resume" in caught.value.hint and caught.value.exit_code == 2
    assert torch.load(out / "last_state.pt", weights_only=True)["epoch"] == 1  # the last good state
    assert [p.name for p in out.iterdir() if files.is_temporary(p) or p.name == files.LOCK_NAME] == []
    failing_disk(None)  # space freed
    train(TrainConfig(**tiny(data, out, resume=True)))
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_real_full_disk_is_one_message_and_the_run_resumes_after(data, tmp_path, small_disk, capsys):
    from braintumor.cli import main

    disk = small_disk("8m")
    out = disk / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--backbone", "test_efficientnet", "--no-pretrained",
            "--image-size", "32", "--batch-size", "8", "--threads", "1", "--no-test", "-q"]
    assert main([*args, "--epochs", "1"]) == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    filler = fill(disk)
    assert main([*args, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "no space left on the device" in err and "--resume" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half written, nothing lost
    filler.unlink()
    assert main([*args, "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_read_only_folder_is_one_message_before_any_work(data, read_only_folder, capsys):
    from braintumor.cli import main

    code = main(["train", "--data", str(data), "--out", str(read_only_folder / "run"), "--backbone", "test_efficientnet",
                 "--no-pretrained", "--image-size", "32", "--epochs", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: cannot write {read_only_folder / 'run'}" in err and "hint:" in err, err
    assert "Traceback" not in err and os.listdir(read_only_folder) == []
