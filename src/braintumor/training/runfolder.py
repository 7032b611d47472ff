"""The run folder of a training run: refused, resumed or started; its recorded settings
(``config.json``), its checkpoints and training state, written crash-safely; interrupts.
"""

from __future__ import annotations

import io
import json
import secrets
import signal
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
import numpy as np
import torch
from braintumor.distributed import is_main
from braintumor.model.checkpoint import ModelInfo, read_info, save_checkpoint
from braintumor.data.dataset import Dataset
from braintumor.errors import BrainTumorError
from braintumor.files import remove_temporaries, write_bytes, write_json, write_text
from braintumor.training.config import TrainConfig
from braintumor.data.preprocess import Preprocess
from braintumor.data.protocols import Split


def log(message: str) -> None:
    """Progress messages go to stderr, so that stdout stays clean for --json (in a data-parallel
    job, rank 0's only)."""
    if is_main():
        print(message, file=sys.stderr, flush=True)


class _Interrupts:
    """Ctrl-C while training: SIGINT raises KeyboardInterrupt at once, as Python's own handler does,
    and is also remembered, so that the loop raises it again at the next batch should Python have
    swallowed the first one (it does when the signal lands in a finalizer: "Exception ignored")."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt


@contextmanager
def _remembering_interrupts():
    """Install `_Interrupts` for SIGINT while training, only where Python's default handler is in
    place (in the main thread; an ignored SIGINT or another program's handler is left alone)."""
    interrupts = _Interrupts()
    previous = None
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous = signal.signal(signal.SIGINT, interrupts)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield interrupts
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# What a resumed run may change: where the data and run are, how long it may go on, how it
# reports. Everything else (protocol, seed, recipe, exclusions, ...) shapes the split or the
# model, so a resumed run must keep the value it started with.
RESUME_MAY_CHANGE = frozenset({"data", "out", "epochs", "patience", "time_limit_min", "threads", "resume", "overwrite",
                               "progress", "device", "compile"})


# What `train` and `evaluate` write into a run folder (with the ONNX files `export` puts beside
# the model by default): what ``overwrite`` removes before a run starts over. Other files stay.
RUN_FILES = ("config.json", "model.safetensors", "model.json", "last.safetensors", "last.json", "last_state.pt",
             "metrics.jsonl", "split.json", "test_metrics.json", "confusion_matrix.json", "confusion_matrix.png",
             "curves.png", "reliability.png", "skipped.json", "report.md", "model.onnx", "model-int8.onnx")


# The run's settings, written before anything else (see `_open_run`).
CONFIG_FILE = "config.json"


# A folder holding any of these holds a training run, started if perhaps not one epoch done.
_RUN_MARKERS = (CONFIG_FILE, "model.safetensors", "last.safetensors", "last_state.pt")


class TrainingDiverged(BrainTumorError):
    """The loss or the weights stopped being finite numbers; the run stops, its last good
    checkpoint kept."""


def _read_record(out: Path) -> dict | None:
    """The run record ``config.json`` of folder `out` (``{"run": id, "config": {...}}``), or None."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise BrainTumorError(f"{path} is damaged: it does not hold a run's settings",
                              "start the run over with --overwrite, or train into another --out")
    return record


def stored_config(out: str | Path) -> dict | None:
    """The training config a run folder records (None for a folder without a run).

    That is ``config.json``, written before any training and rewritten with the settings of each
    resume; a run of an earlier version has only the config stored with its last checkpoint.
    """
    record = _read_record(Path(out))
    if record is not None:
        return record["config"]
    path = Path(out) / "last.safetensors"
    return read_info(path)[0].train_config if path.is_file() else None


def check_resume(config: TrainConfig, stored: dict) -> None:
    """Raise a `BrainTumorError` if `config` resumes a run that was started with other settings
    than `RESUME_MAY_CHANGE` allows (`stored`: the run's stored training config)."""
    names = {f.name for f in fields(TrainConfig)}
    started = asdict(TrainConfig(**{k: v for k, v in stored.items() if k in names}))
    now = asdict(config)
    changed = [k for k in sorted(names - RESUME_MAY_CHANGE) if now[k] != started[k]]
    if changed:
        shown = ", ".join(f"{k}={started[k]!r}, not {now[k]!r}" for k in changed[:4])
        raise BrainTumorError(
            f"{config.out} was started with {shown}; a resumed run must keep its split and recipe",
            "resume with the settings it started with (`braintumor train --out RUN --resume` reads a run's own), "
            "or train into a new --out",
        )


def finished(out: str | Path, config: TrainConfig) -> bool:
    """Whether run folder `out` has trained all it will under `config`: its last checkpoint is
    past ``config.epochs`` or ``config.patience`` epochs without improvement, and the fits after
    training are saved with its best model. (A run stopped by its time limit is not finished: a
    resume gives it a new budget.)"""
    out = Path(out)
    if not (out / "last_state.pt").is_file() or not (out / "model.safetensors").is_file():
        return False
    state = torch.load(out / "last_state.pt", map_location="cpu", weights_only=True)
    stopped = state["epoch"] >= config.epochs or state["bad_epochs"] >= config.patience
    return stopped and "train_minutes" in read_info(out / "model.safetensors")[0].metrics


@dataclass
class _Run:
    """A run folder opened by `_open_run`.

    Attributes
    ----------
    out : Path
        The folder.
    config : TrainConfig
        The run's settings, as recorded in its ``config.json``.
    run_id : str
        The run's identity, in ``config.json`` and in every ``last_state.pt``: a state of
        another run (one replaced by ``--overwrite`` before it wrote a state) is not resumed.
    state : dict or None
        The last complete epoch's training state to continue from; None to start from the first.
    finished : bool
        The run has trained all it will under `config`: nothing to do.
    previous : bytes or None
        ``config.json`` as it was before this start, put back if the start fails (`undone_on_error`).
    """

    out: Path
    config: TrainConfig
    run_id: str
    state: dict | None = None
    finished: bool = False
    previous: bytes | None = None

    @contextmanager
    def undone_on_error(self):
        """Inside the block, a `BrainTumorError` (bad data, a missing teacher, ...) puts
        ``config.json`` back as it was: a run is not replaced by a start that fails on its data
        or model. (A start killed in the block leaves the new settings, so that --resume starts
        it with them.)"""
        try:
            yield
        except BrainTumorError:
            if not is_main():  # (rank 0 puts it back)
                raise
            if self.previous is None:
                (self.out / CONFIG_FILE).unlink(missing_ok=True)
            else:
                write_bytes(self.out / CONFIG_FILE, self.previous)
            raise

    def start_files(self, data: RunData) -> None:
        """Start the run from its first epoch: remove an earlier run's files (not config.json,
        nor the user's own), and write ``split.json`` (rank 0 alone, in a data-parallel job)."""
        if not is_main():
            return
        for name in RUN_FILES:
            if name != CONFIG_FILE:
                (self.out / name).unlink(missing_ok=True)
        write_split(self.out / "split.json", self.config, data)


def _open_run(out: Path, config: TrainConfig) -> _Run:
    """Decide what `config` does in run folder `out` (locked by the caller), and record its
    settings in ``out/config.json`` before anything else is written.

    A folder without a run starts one. A folder holding a run (its ``config.json``, or the
    checkpoints of an earlier version) is refused unless ``resume`` or ``overwrite`` is set.
    With ``resume``, the run continues from its last complete epoch (its ``last_state.pt``), or
    starts again with its recorded settings if no epoch had ended (killed while decoding, in its
    first epoch, or while writing its first state); either way its settings are checked with
    `check_resume`. With ``overwrite``, it starts over. Temporaries of killed writers are removed.
    """
    remove_temporaries(out, all_but_ours=True, legacy=tuple(f"{name}.tmp" for name in RUN_FILES))
    holds_run = any((out / name).is_file() for name in _RUN_MARKERS)
    if holds_run and not (config.resume or config.overwrite):  # a run is never replaced unasked
        raise BrainTumorError(f"{out} already holds a training run",
                              "continue it with --resume, start it over with --overwrite, or give another --out")
    record = _read_record(out)
    previous = (out / CONFIG_FILE).read_bytes() if record is not None else None
    run = _Run(out, config, secrets.token_hex(8), previous=previous)
    if config.resume and holds_run:
        check_resume(config, stored_config(out) or {})
        run_id = record["run"] if record is not None else "legacy"  # (a run of an earlier version)
        state = _load_state(out / "last_state.pt")
        if state is not None and state.get("run", "legacy") == run_id:
            run.run_id, run.state = run_id, state
            run.finished = finished(out, config)
        else:
            log(f"restarting {out} from its first epoch with its recorded settings (it was stopped before one ended)")
    if not run.finished:
        write_json(out / CONFIG_FILE, {"run": run.run_id, "config": asdict(config)})
    return run


def _load_state(path: Path) -> dict | None:
    """A ``last_state.pt`` (None if there is none)."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


@dataclass
class RunData:
    """A run's images, labels and split (`load_run_data`)."""

    preprocess: Preprocess
    dataset: Dataset
    images: np.ndarray  # N x S x S x 3 uint8, decoded once for all epochs
    labels: np.ndarray  # class of each image, a run's corrections applied to training and validation
    split: Split
    images_t: torch.Tensor = field(init=False)
    labels_t: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.images_t, self.labels_t = torch.from_numpy(self.images), torch.from_numpy(self.labels)


def write_split(path: Path, config: TrainConfig, data: RunData) -> None:
    """Write ``split.json``: the run's protocol and seed, its train/val/test images, exclusions
    and corrected labels."""
    dataset, labels = data.dataset, data.labels
    write_text(path, json.dumps({
        "protocol": config.protocol,
        "seed": config.seed,
        **{part: [str(dataset.paths[i]) for i in getattr(data.split, part)] for part in ("train", "val", "test")},
        "excluded": list(config.exclude),
        "relabelled": {str(dataset.paths[i]): dataset.classes[labels[i]] for i in np.flatnonzero(labels != dataset.labels)},
    }))


@dataclass
class Progress:
    """Where a run stands after its last complete epoch: epochs done, the best validation score
    ``[val_acc, -val_loss]``, epochs since it improved, and each epoch's record."""

    epoch: int = 0
    best: list | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)

    def add(self, record: dict) -> bool:
        """Count an epoch's record in; whether it is the best so far."""
        self.epoch = record["epoch"]
        self.history.append(record)
        score = (record["val_acc"], -record["val_loss"])
        if self.best is None or score > tuple(self.best):
            self.best, self.bad_epochs = list(score), 0
            return True
        self.bad_epochs += 1
        return False

    def metrics_lines(self) -> str:
        """``metrics.jsonl``: one JSON line per epoch."""
        return "".join(json.dumps(record) + "\n" for record in self.history)


def _training_state(run: _Run, done: Progress, model, ema, optimizer, generator, info: ModelInfo) -> dict:
    """What ``last_state.pt`` holds to continue the run bit for bit."""
    return {
        "model": model.net.state_dict(),
        **({"ema": ema.module.net.state_dict()} if ema is not None else {}),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": done.epoch,
        "best": done.best,
        "bad_epochs": done.bad_epochs,
        "fingerprint": info.data_fingerprint,
        "history": done.history,
        "run": run.run_id,
    }


def _restore(run: _Run, info: ModelInfo, model, ema, optimizer, generator) -> Progress:
    """Load a run's last state into the model, its average, the optimiser and the random
    generators; return its progress."""
    state = run.state
    if state["fingerprint"] != info.data_fingerprint:
        raise BrainTumorError(f"{run.out} was trained on other data", "resume with the same --data, or use a new --out")
    model.net.load_state_dict(state["model"])
    if ema is not None:
        ema.module.net.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    log(f"resuming {run.out} after epoch {state['epoch']}")
    return Progress(state["epoch"], state["best"], state["bad_epochs"], list(state["history"]))


def save_epoch(out: Path, improved: bool, kept, info: ModelInfo, state: dict) -> None:
    """Write an epoch's files, each atomically: ``model.safetensors`` if the epoch is the best so
    far, ``last.safetensors``, ``last_state.pt``, then ``metrics.jsonl``.

    A run killed between two of them resumes from ``last_state.pt``, which is written after the
    checkpoints: at worst it trains the epoch again, to the same weights. The epoch's line is
    written last, so that the metrics file never runs ahead of the state.
    """
    if improved:
        save_checkpoint(out / "model.safetensors", kept, info)
    save_checkpoint(out / "last.safetensors", kept, info)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(out / "last_state.pt", buffer.getbuffer())
    write_text(out / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in state["history"]))
