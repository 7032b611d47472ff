"""Training, readable top to bottom: data → split → model → loop → best checkpoint → report.

`train(config)` is what ``braintumor train`` runs. Each epoch writes a line to
``metrics.jsonl``; ``last.safetensors`` + ``last_state.pt`` are rewritten atomically after every
epoch, so a run killed at any moment resumes with ``--resume``; ``model.safetensors`` is the best
epoch on validation.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from braintumor.model.factory import to_float
from braintumor.training.augment import augment, degrade, erase, mixup, remap_contrast
from braintumor.metrics.calibration import as_logits, fit_temperature
from braintumor.model.checkpoint import ModelInfo, load_checkpoint, read_info, save_checkpoint
from braintumor.data.classes import CLASSES
from braintumor.data.dataset import default_data_dir, load_images, scan
from braintumor.training.distill import distill_loss, load_teachers, teacher_probs
from braintumor.errors import BrainTumorError
from braintumor.inference.forward import predict_images
from braintumor.model.factory import DEFAULT_BACKBONE, create_model, depthwise_in_float32, freeze_early_layers
from braintumor.inference.ood import fit_model_ood
from braintumor.data.preprocess import Preprocess
from braintumor.data.protocols import run_labels, run_split, uncorrected_copies
from braintumor.model.views import MirrorView


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the checkpoint."""

    data: str = field(default_factory=lambda: str(default_data_dir()))
    out: str = "runs/latest"
    protocol: str = "original"
    seed: int = 0  # of the split; also of the training below unless `train_seed` is set
    # Seed of the initialisation, augmentation, data order and dropout (None: `seed`). Runs of one
    # split that differ only in it are a deep ensemble (teachers for `teacher`, say), and their
    # spread is the training's own run-to-run noise, apart from the split's.
    train_seed: int | None = None
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    weights: str | None = None
    image_size: int = 160
    # Progressive resizing: the first `low_res_fraction` of the epochs train on images scaled by
    # `low_res_scale` (cheaper steps); the rest at `image_size`. 1.0 or 0 turns it off.
    low_res_scale: float = 0.8
    low_res_fraction: float = 0.3
    crop_foreground: bool = True
    equalize: bool = False  # histogram-equalise the head's intensities (Preprocess.equalize)
    freeze_blocks: int = 0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    # Layer-wise learning-rate decay: each backbone block learns at `layer_decay` times the rate of
    # the block after it (the head at `lr`). 1: every layer at `lr`.
    layer_decay: float = 1.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no weight averaging; else validate and keep the exponential moving average
    drop_rate: float = 0.5
    drop_path_rate: float = 0.0  # stochastic depth while training
    mixup_alpha: float = 0.0  # 0: off; else mix each batch with a shuffled copy, weight ~ Beta(a, a)
    erase_prob: float = 0.0  # random erasing: share of training images with one rectangle overwritten by noise
    contrast_prob: float = 0.0  # share of training images whose tissue contrast is remapped (half inverted)
    degrade_prob: float = 0.0  # share of training images blurred by a random loss of resolution, plus noise
    # Source balancing: each epoch draws its images (with replacement) with weight n ** -a, where n
    # is the number of training images from the same top-level folder (Training/, Testing/, ...).
    # 0: off (every image once per epoch); 1: every source equally often.
    balance_sources: float = 0.0
    # Group sampling: each epoch shows one randomly drawn image of every near-duplicate group of
    # the training part (`braintumor.data.duplicates`), so copies count once and epochs are shorter.
    sample_groups: bool = False
    # Linear probing first (LP-FT): before fine-tuning, fit the head by logistic regression on the
    # frozen pretrained features of the training images, instead of starting from a random head
    # (which can distort the pretrained features early). Off: no gain on validation (docs/recipes.md).
    probe_head: bool = False
    warmup_epochs: float = 1.0
    patience: int = 8
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    train_fraction: float = 1.0  # train on this share of the training part (learning curves)
    # Images left out of training and validation (paths relative to `data`, e.g. the likely wrong
    # labels `braintumor label-issues` lists); the test part stays what it is without them.
    exclude: list = field(default_factory=list)
    # Corrected labels ({path relative to `data`: class}, e.g. from a review of label-issues'
    # flags): trained and validated on in place of the folders' labels; the test part keeps those.
    relabel: dict = field(default_factory=dict)
    # Knowledge distillation (braintumor.distill): finished runs of the same split whose mean
    # softened predictions the loss also matches, with this weight and softmax temperature.
    teacher: list = field(default_factory=list)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    folds: int = 0  # cross-validation: test on fold `fold` of `folds` (see braintumor.crossval)
    fold: int = 0
    bf16: bool = True
    tta: bool = True
    tta_angle: float = 8.0  # the test-time view: the mirror rotated by this many degrees
    threads: int | None = None
    # Wall-clock budget of the whole run, decoding the images included: an epoch starts only when
    # it and the post-hoc fits are projected to end within it (see `next_epoch_fits`). 0 or None: no limit.
    time_limit_min: float | None = 14.0
    class_map: dict = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False  # start over in an `out` that holds a run (else that is refused)
    progress: bool = True

    def __post_init__(self):
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("patience", self.patience >= 1, "at least 1"),
            ("freeze_blocks", self.freeze_blocks >= 0, "non-negative"),
            ("low_res_scale", 0.25 <= self.low_res_scale <= 1, "in [0.25, 1]"),
            ("low_res_fraction", 0 <= self.low_res_fraction < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "non-negative"),
            ("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("drop_path_rate", 0 <= self.drop_path_rate < 1, "in [0, 1)"),
            ("mixup_alpha", 0 <= self.mixup_alpha <= 10, "in [0, 10]"),
            ("erase_prob", 0 <= self.erase_prob <= 1, "in [0, 1]"),
            ("contrast_prob", 0 <= self.contrast_prob <= 1, "in [0, 1]"),
            ("degrade_prob", 0 <= self.degrade_prob <= 1, "in [0, 1]"),
            ("balance_sources", 0 <= self.balance_sources <= 1, "in [0, 1]"),
            ("tta_angle", -180 <= self.tta_angle <= 180, "within ±180 degrees"),
            ("train_fraction", 0 < self.train_fraction <= 1, "in (0, 1]"),
            ("distill_weight", 0 < self.distill_weight <= 1, "in (0, 1]"),
            ("distill_temperature", 0 < self.distill_temperature <= 20, "in (0, 20]"),
            ("folds", self.folds == 0 or self.folds >= 2, "0 (no cross-validation) or at least 2"),
            ("fold", 0 <= self.fold < max(self.folds, 1), "in 0..folds-1"),
            ("time_limit_min", self.time_limit_min is None or self.time_limit_min >= 0, "non-negative (0: no limit)"),
            ("train_seed", self.train_seed is None or 0 <= self.train_seed < 2**32, "None or in 0..2**32-1"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise BrainTumorError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if not isinstance(self.exclude, (list, tuple)) or not all(isinstance(p, str) for p in self.exclude):
            raise BrainTumorError(f"exclude must be a list of image paths, got {self.exclude!r}")
        self.data = os.path.abspath(self.data)
        self.exclude = sorted({_under(path, self.data) for path in self.exclude})
        if not isinstance(self.relabel, dict) or not all(
                isinstance(p, str) and c in CLASSES for p, c in self.relabel.items()):
            raise BrainTumorError(f"relabel must map image paths to classes ({', '.join(CLASSES)}), got {self.relabel!r}")
        self.relabel = {_under(path, self.data): c for path, c in sorted(self.relabel.items())}
        if not isinstance(self.teacher, (list, tuple)) or not all(isinstance(p, str) for p in self.teacher):
            raise BrainTumorError(f"teacher must be a list of run folders or checkpoints, got {self.teacher!r}")
        # Stored as absolute paths, so the run resumes and evaluates from any working directory
        # (a teacher cannot be given anew on resume: it shapes the model).
        self.teacher = [os.path.abspath(p) for p in self.teacher]
        if self.train_seed == self.seed:  # the default spelled out: stored as the default, so resumes match
            self.train_seed = None
        if self.resume and self.overwrite:
            raise BrainTumorError("resume and overwrite contradict each other", "use --resume to continue a run, --overwrite to start it over")
        if self.sample_groups and self.balance_sources:
            raise BrainTumorError("sample_groups and balance_sources both choose each epoch's images",
                                  "use one of --sample-groups and --balance-sources")


def _under(path: str, root: str) -> str:
    """`path` relative to `root` (POSIX style) if it is an absolute path under it, else as given:
    a run's stored exclusions then still name the images when the dataset moves."""
    if not Path(path).is_absolute():
        return path
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path


def low_res_size(config: TrainConfig) -> int:
    """Image side of the progressive-resizing epochs."""
    return max(16, round(config.image_size * config.low_res_scale))


def low_res_epochs(config: TrainConfig) -> int:
    """How many epochs, from the first, train at `low_res_size` (never the last one)."""
    if low_res_size(config) >= config.image_size:
        return 0
    return min(round(config.epochs * config.low_res_fraction), config.epochs - 1)


def epoch_size(config: TrainConfig, epoch: int) -> int:
    """Image side that epoch `epoch` (from 0) trains at: `low_res_size` for the first
    `low_res_epochs`, the served `image_size` after."""
    return low_res_size(config) if epoch < low_res_epochs(config) else config.image_size


# What the post-hoc fits (temperature, out-of-distribution statistics) cost, in epochs at the
# served size: 32 s against 68 s per epoch, and 35 s against 61 s, on a 2-core Intel Xeon; both
# scale with the training set and the machine alike. (Evaluating the test split and writing the
# report, outside `train`, take about 10 s more.)
POSTHOC_EPOCHS = 0.5


def next_epoch_fits(elapsed_s: float, epoch_s: float, size: int, next_size: int, image_size: int, limit_min: float,
                    posthoc_epochs: float = POSTHOC_EPOCHS) -> bool:
    """Whether the next epoch, and the post-hoc fits after it, are projected to end within
    `limit_min` minutes of the run's start.

    Parameters
    ----------
    elapsed_s : float
        Seconds since the run started.
    epoch_s : float
        How long the epoch just ended took, validation and checkpointing included.
    size, next_size : int
        Image side of that epoch and of the next one (progressive resizing changes it).
    image_size : int
        The served image side, at which the post-hoc fits run.
    limit_min : float
        The run's budget in minutes.
    posthoc_epochs : float
        What the post-hoc fits cost, in epochs like the last one at the served size. The fits go
        over every training image, so when an epoch shows fewer (`TrainConfig.sample_groups`)
        this is `POSTHOC_EPOCHS` times the training images per epoch shown.

    The cost of an epoch is taken to grow with the image side squared, which overestimates the
    step from 128 to 160 px slightly (measured 1.45x, not 1.56x): a run errs on the short side.
    """
    next_s = epoch_s * (next_size / size) ** 2
    posthoc_s = posthoc_epochs * epoch_s * (image_size / size) ** 2
    return elapsed_s + next_s + posthoc_s <= 60 * limit_min


def _source_weights(sources: list[str], power: float) -> torch.Tensor | None:
    """Sampling weight ``n ** -power`` of each training image, `n` the images of its source; None
    (every image once per epoch) when `power` is 0 or there is one source."""
    if not power or len(set(sources)) < 2:
        return None
    _, index, counts = np.unique(np.asarray(sources), return_inverse=True, return_counts=True)
    return torch.from_numpy(counts[index].astype(np.float64) ** -power)


def _param_groups(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """The optimiser's parameter groups: weight decay on weights, not on biases and norms; with
    `layer_decay` below 1, also a learning-rate scale ``lr_scale`` per backbone block from timm
    (the head 1, each block before it `layer_decay` times the next)."""
    if layer_decay < 1:
        return param_groups_layer_decay(model.net, weight_decay=weight_decay, layer_decay=layer_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]


def _train_groups(dataset, split, progress: bool) -> np.ndarray:
    """Near-duplicate group id of each training image: the split's own under ``dedup``, else
    grouped here (hashes every image once, then cached)."""
    from braintumor.data.duplicates import duplicate_groups

    groups = split.groups if split.groups is not None else duplicate_groups(dataset, progress=progress)
    return groups[split.train]


def one_per_group(groups: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Positions into `groups` of one uniformly drawn member of every group, in random order."""
    groups = np.asarray(groups)
    key = torch.rand(len(groups), generator=generator, dtype=torch.float64).numpy()
    by_group = np.lexsort((key, groups))  # within each group, the member with the smallest key first
    first = np.ones(len(groups), dtype=bool)
    first[1:] = groups[by_group][1:] != groups[by_group][:-1]
    chosen = by_group[first]
    return chosen[torch.randperm(len(chosen), generator=generator).numpy()]


@torch.inference_mode()
def pooled_features(model, images: np.ndarray, size: int, bf16: bool, batch_size: int = 64) -> np.ndarray:
    """The network's pooled penultimate features (`Classifier.features`) of uint8 images resized
    to `size`, in evaluation mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]), size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(model.features(x).float().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def fit_linear_head(model, images: np.ndarray, labels: np.ndarray, split, size: int, bf16: bool = True,
                    progress: bool = False) -> float:
    """Linear probing, the first step of LP-FT: set the model's dense head to a multinomial
    logistic regression fitted on its frozen features of the training images.

    The regularisation strength is chosen among a few values by the validation images' log-loss.
    The features are those of evaluation mode (ImageNet's batch-norm statistics); training
    normalises each batch by its own statistics and drops half the features, so the fitted head
    does not fit what the first training steps see: on Sartaj the first epoch's training loss
    was 1.35, near chance, all the same.

    Parameters
    ----------
    model : Classifier
        Its backbone is left as it is; only the head's weight and bias change.
    images, labels : arrays
        Every image of the dataset (``N x S x S x 3`` uint8) and its class index.
    split : Split
        Fitted on ``split.train``, the strength chosen on ``split.val``.
    size : int
        Image side the features are computed at (the first epoch's).

    Returns
    -------
    float
        The chosen head's accuracy on the validation images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    bar = tqdm(total=2, desc="linear probe", disable=not progress)
    train_x = pooled_features(model, images[split.train], size, bf16)
    bar.update()
    val_x = pooled_features(model, images[split.val], size, bf16)
    bar.update()
    bar.close()
    train_y, val_y = labels[split.train], labels[split.val]
    classes = np.arange(model.net.get_classifier().out_features)
    if len(np.unique(train_y)) != len(classes):
        raise BrainTumorError("the linear probe needs training images of every class", "check the dataset's class folders")
    fits = []
    for c in (0.003, 0.01, 0.03, 0.1, 1.0):  # dedup seeds 0-2 of Sartaj at 128 px: 0.03, 0.03, 0.01
        probe = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        fits.append((log_loss(val_y, probe.predict_proba(val_x), labels=classes), c, probe))
    loss, c, probe = min(fits, key=lambda fit: fit[0])
    head = model.net.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(probe.coef_))
        head.bias.copy_(torch.from_numpy(probe.intercept_))
    accuracy = float((probe.predict(val_x) == val_y).mean())
    log(f"linear probe: validation accuracy {accuracy:.4f}, log-loss {loss:.4f} (C = {c:g})")
    return accuracy


def log(message: str) -> None:
    """Progress messages go to stderr, so that stdout stays clean for --json."""
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
                               "progress"})

# What `train` and `evaluate` write into a run folder (with the ONNX files `export` puts beside
# the model by default): what ``overwrite`` removes before a run starts over. Other files stay.
RUN_FILES = ("model.safetensors", "model.json", "last.safetensors", "last.json", "last_state.pt", "metrics.jsonl",
             "split.json", "test_metrics.json", "confusion_matrix.json", "confusion_matrix.png", "curves.png",
             "reliability.png", "skipped.json", "report.md", "model.onnx", "model-int8.onnx")


def stored_config(out: str | Path) -> dict | None:
    """The training config stored with the last checkpoint in run folder `out` (None without one)."""
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


def train(config: TrainConfig) -> Path:
    """Train a model under `config` and write the run directory; returns its path.

    With ``config.resume`` and a last checkpoint in ``config.out``, training continues from it;
    the settings that shape the split and the model must be those the run started with
    (`check_resume`).
    """
    with _remembering_interrupts() as interrupts:
        return _train(config, interrupts)


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


def _train(config: TrainConfig, interrupts: _Interrupts) -> Path:
    out = Path(config.out)
    if config.resume and (out / "last_state.pt").is_file():
        check_resume(config, stored_config(out) or {})
        if finished(out, config):
            log(f"{out} has finished training; nothing to resume (raise --epochs or --patience to train on)")
            return out
    starting_over = any((out / name).is_file() for name in ("model.safetensors", "last_state.pt")) and not (
        config.resume and (out / "last_state.pt").is_file())
    if starting_over and not config.overwrite:  # a finished or interrupted run is never replaced unasked
        raise BrainTumorError(f"{out} already holds a training run",
                              "continue it with --resume, start it over with --overwrite, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()  # the time limit counts from here, decoding the images included
    if config.threads:
        torch.set_num_threads(config.threads)
    generator = seed_everything(config.seed if config.train_seed is None else config.train_seed)

    # ---- data -------------------------------------------------------------------------------
    preprocess = Preprocess(image_size=config.image_size, crop_foreground=config.crop_foreground,
                            equalize=config.equalize)
    dataset = scan(config.data, config.class_map)
    images, dataset = load_images(dataset, preprocess, progress=config.progress)
    split = run_split(dataset, asdict(config), progress=config.progress)
    for name, idx in (("train", split.train), ("validation", split.val)):
        if len(idx) == 0:
            raise BrainTumorError(f"the {name} set is empty", "add images, lower --val-fraction/--test-fraction or raise --train-fraction")
    images_t = torch.from_numpy(images)  # N x S x S x 3 uint8, decoded once for all epochs
    labels = run_labels(dataset, asdict(config), np.r_[split.train, split.val])  # corrections applied
    if config.relabel and split.groups is not None:
        stale = uncorrected_copies(split.groups, labels, dataset.labels, np.r_[split.train, split.val])
        if len(stale):
            log(f"warning: {len(stale)} near-duplicate copies of corrected images keep their folder's label, e.g. "
                f"{dataset.paths[stale[0]]}; add them to the --relabel file too (braintumor audit lists the copies)")
    labels_t = torch.from_numpy(labels)

    # ---- model and optimiser ----------------------------------------------------------------
    model = create_model(
        config.backbone, len(CLASSES), preprocess, config.pretrained, config.weights, config.drop_rate, config.drop_path_rate
    ).to(memory_format=torch.channels_last)
    frozen = freeze_early_layers(model, config.freeze_blocks)
    teachers = load_teachers(config.teacher, dataset, split, preprocess, CLASSES) if config.teacher else []
    if starting_over:  # (only now: a run is not deleted for a start that fails on its data or model)
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    (out / "split.json").write_text(
        json.dumps(
            {
                "protocol": config.protocol,
                "seed": config.seed,
                **{part: [str(dataset.paths[i]) for i in getattr(split, part)] for part in ("train", "val", "test")},
                "excluded": list(config.exclude),
                "relabelled": {str(dataset.paths[i]): dataset.classes[labels[i]]
                               for i in np.flatnonzero(labels != dataset.labels)},
            }
        )
    )
    state_path = out / "last_state.pt"
    resuming = config.resume and state_path.is_file()
    if config.probe_head and not resuming:
        fit_linear_head(model, images, labels, split, epoch_size(config, 0), config.bf16, config.progress)
    # The exponential moving average of the weights is what is validated and saved, if used.
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay else None
    kept = ema.module if ema is not None else model
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay, config.layer_decay), lr=config.lr)
    train_groups = _train_groups(dataset, split, config.progress) if config.sample_groups else None
    per_epoch = len(np.unique(train_groups)) if train_groups is not None else len(split.train)
    steps_per_epoch = math.ceil(per_epoch / config.batch_size)
    if steps_per_epoch > 1 and per_epoch % config.batch_size == 1:
        steps_per_epoch -= 1  # a lone last image joins the batch before it (batch norm needs two)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    info = ModelInfo(
        classes=list(CLASSES),
        backbone=config.backbone,
        preprocess=preprocess,
        drop_rate=config.drop_rate,
        tta=config.tta,
        tta_view=MirrorView(angle=config.tta_angle),
        train_config=asdict(config),
        data_fingerprint=dataset.fingerprint(),
    )

    # ---- resume -----------------------------------------------------------------------------
    start_epoch, best, bad_epochs, history = 0, None, 0, []
    metrics_path = out / "metrics.jsonl"
    if resuming:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != info.data_fingerprint:
            raise BrainTumorError(f"{out} was trained on other data", "resume with the same --data, or use a new --out")
        model.net.load_state_dict(state["model"])
        if ema is not None:
            ema.module.net.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, bad_epochs = state["epoch"], state["best"], state["bad_epochs"]
        history = list(state["history"])
        log(f"resuming {out} after epoch {start_epoch}")
    metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    source_weights = _source_weights([dataset.splits[i] for i in split.train], config.balance_sources)

    # ---- loop -------------------------------------------------------------------------------
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience:  # (a resumed run that had stopped early)
            break
        epoch_started = time.time()
        model.train()
        for module in frozen:
            module.eval()  # frozen layers keep their ImageNet batch-norm statistics
        if train_groups is not None:
            order = split.train[one_per_group(train_groups, generator)]
        elif source_weights is None:
            order = split.train[torch.randperm(len(split.train), generator=generator).numpy()]
        else:
            order = split.train[torch.multinomial(source_weights, len(split.train), True, generator=generator).numpy()]
        # Progressive resizing: early epochs see smaller images (cheaper steps), the last ones
        # the served size, so the kept weights and batch-norm statistics match what is served.
        size = epoch_size(config, epoch)
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress)
        for b in bar:
            end = (b + 1) * config.batch_size if b < steps_per_epoch - 1 else len(order)
            idx = torch.from_numpy(order[b * config.batch_size : end])
            x = augment(to_float(images_t[idx], size), generator)
            if config.erase_prob:
                x = erase(x, config.erase_prob, generator)
            if config.contrast_prob:
                x = remap_contrast(x, config.contrast_prob, generator)
            if config.degrade_prob:
                x = degrade(x, config.degrade_prob, generator)
            y = labels_t[idx]
            if config.mixup_alpha:
                x, perm, lam = mixup(x, config.mixup_alpha, generator)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, warmup_steps, config.lr) * group.get("lr_scale", 1.0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16), depthwise_in_float32(model):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            if config.mixup_alpha:
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=config.label_smoothing)
            if teachers:  # the teachers' view of the same (augmented, mixed) batch
                soft = teacher_probs(teachers, x, config.distill_temperature, config.bf16)
                loss = distill_loss(logits, soft, config.distill_weight, config.distill_temperature, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, step=step)
            step += 1
            interrupts.check()
            seen += len(y)
            # (with mixup, a prediction counts as right when it names the larger share's label)
            target = y[perm] if config.mixup_alpha and lam < 0.5 else y
            correct += (logits.argmax(1) == target).sum().item()
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()

        val_probs = predict_images(kept, images[split.val], tta=False, bf16=config.bf16)
        val_y = labels[split.val]
        val_loss = float(-np.log(np.clip(val_probs[np.arange(len(val_y)), val_y], 1e-12, 1)).mean())
        val_acc = float((val_probs.argmax(1) == val_y).mean())
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "elapsed_s": round(time.time() - started, 1),
        }
        history.append(record)
        log(
            f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}"
        )
        score = (val_acc, -val_loss)
        if best is None or score > tuple(best):
            best, bad_epochs = list(score), 0
            info.metrics = {"val_acc": val_acc, "val_loss": val_loss, "best_epoch": epoch + 1}
            save_checkpoint(out / "model.safetensors", kept, info)
        else:
            bad_epochs += 1
        save_checkpoint(out / "last.safetensors", kept, info)
        _atomic_torch_save(
            {
                "model": model.net.state_dict(),
                **({"ema": ema.module.net.state_dict()} if ema is not None else {}),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "best": best,
                "bad_epochs": bad_epochs,
                "fingerprint": info.data_fingerprint,
                "history": history,
            },
            state_path,
        )
        # The epoch's line is written after its checkpoint, so a run killed in between resumes
        # with a metrics file that matches its state (the history is restored from the state).
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if bad_epochs >= config.patience:
            log(f"early stopping: validation has not improved for {config.patience} epochs")
            break
        if config.time_limit_min and epoch + 1 < config.epochs:
            now = time.time()
            if not next_epoch_fits(now - started, now - epoch_started, size, epoch_size(config, epoch + 1), config.image_size,
                                   config.time_limit_min, POSTHOC_EPOCHS * len(split.train) / per_epoch):
                log(
                    f"stopping after {epoch + 1} epochs: another would not end within the "
                    f"{config.time_limit_min:g}-min limit ({(now - started) / 60:.1f} min so far)"
                )
                break

    # ---- finalise: the best epoch's weights, with what is fitted after training -------------
    # Post-hoc steps (calibration, out-of-distribution statistics, ...) fit on the training or
    # validation part only, update `info`, and are saved with the weights.
    model, info = load_checkpoint(out / "model.safetensors")
    fit_posthoc(model, info, images, labels, split)
    info.metrics["train_minutes"] = round((time.time() - started) / 60, 2)
    save_checkpoint(out / "model.safetensors", model, info)
    return out


def fit_posthoc(model, info: ModelInfo, images: np.ndarray, labels: np.ndarray, split) -> None:
    """Fit what is fitted after training, on the training and validation parts only, into `info`:
    the softmax temperature (calibration, on validation logits) and the out-of-distribution
    statistics (on training features, threshold on validation)."""
    val_probs = predict_images(model, images[split.val], tta=info.tta, tta_view=info.tta_view)
    info.temperature = fit_temperature(as_logits(val_probs), labels[split.val])
    info.metrics["val_acc_final"] = float((val_probs.argmax(1) == labels[split.val]).mean())
    fit_model_ood(model, info, images[split.train], labels[split.train], images[split.val])
