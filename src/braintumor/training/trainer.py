"""Training, readable top to bottom: data → split → model → loop → best checkpoint → report.

`train(config)` is what ``braintumor train`` runs. It locks the run folder, records the run's
settings in ``config.json`` before anything else, and after every epoch rewrites
``last.safetensors``, ``last_state.pt`` and ``metrics.jsonl`` (a line per epoch);
``model.safetensors`` is the best epoch on validation. Every file is written atomically
(`braintumor.files`), so a run killed at any moment resumes with ``--resume``: from its last
complete epoch, bit for bit, or from the start with its recorded settings. A loss or weights that
stop being finite (or a loss that blows up) stop the run (`TrainingDiverged`).

`_train` reads top to bottom: the run folder, data and model, then the loop over epochs and
batches, each step a named helper (`accumulate_gradients`, which makes the micro-batches with
`make_batch` and takes `batch_loss` over them; `sum_over_ranks`; `validate`; `save_epoch`).

The same loop serves one process and a data-parallel job of N (``torchrun``,
`braintumor.distributed`): every global batch is cut into micro-batches (one per rank unless
``micro_batch`` asks for more), each augmented and dropped out with its own seed, so a batch's
images and their randomness do not depend on which rank takes them; gradients, batch-norm
statistics and losses are summed over the ranks once per step. With ``micro_batch`` given, a run
on any number of processes takes the same steps (bit for bit at equal threads per process).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from torch import nn

from braintumor import distributed
from braintumor.model.factory import to_float
from braintumor.training.augment import augment, degrade, erase, mixup, remap_contrast
from braintumor.metrics.calibration import as_logits, fit_temperature
from braintumor.model.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from braintumor.data.classes import CLASSES
from braintumor.data.dataset import load_images, scan
from braintumor.training.distill import distill_loss, load_teachers, teacher_probs
from braintumor.errors import BrainTumorError
from braintumor.files import OutputError, locked_folder, write_text
from braintumor.options import OOD_VARIANTS, cap_threads
from braintumor.training.config import TrainConfig
from braintumor.training.runfolder import CONFIG_FILE, Progress, RunData, TrainingDiverged, _Interrupts, _open_run, _remembering_interrupts, _restore, _training_state, log, save_epoch
from braintumor.training.probe import fit_linear_head
from braintumor.inference.forward import predict_images
from braintumor.model.device import autocast, autocast_dtype, describe, grad_scaler, resolve_device, to_device
from braintumor.model.factory import create_model, depthwise_in_float32, freeze_early_layers
from braintumor.inference.ood import fit_model_ood
from braintumor.data.preprocess import Preprocess
from braintumor.data.protocols import run_labels, run_split, uncorrected_copies
from braintumor.model.views import MirrorView


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
# served size. One inference pass over the training images costs about 0.6 of an epoch (48
# against 28 images/s at 160 px in float32 on a 2-core AMD EPYC); the fits make 1 + OOD_VARIANTS
# such passes (the detector's features of the images and of their intensity-remapped copies), and
# about 0.3 of one more over the validation images (the temperature with the test-time view, the
# detector's threshold). Both sides scale with the training set and the machine alike.
# (Evaluating the test split and writing the report, outside `train`, come on top.)
POSTHOC_EPOCHS = 0.6 * (1 + OOD_VARIANTS + 0.3)


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


def source_names(dataset, rows) -> list[str]:
    """The source of each of `rows` for `TrainConfig.balance_sources`: its top-level folder
    (``Training``, ``Testing``, or ``""``), prefixed by its collection's name when the data pools
    several (``sartaj/Training``)."""
    if len(dataset.collections) < 2:
        return [dataset.splits[i] for i in rows]
    return [f"{dataset.collections[dataset.sources[i]]}/{dataset.splits[i]}".rstrip("/") for i in rows]


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


def train(config: TrainConfig) -> Path:
    """Train a model under `config` and write the run directory; returns its path.

    With ``config.resume``, a run in ``config.out`` continues from its last complete epoch, or
    starts again with its recorded settings if it was stopped before one ended; those that shape
    the split and the model must be the ones it started with (`check_resume`).

    The run folder is locked first (`braintumor.files.locked_folder`): a second run on it is
    refused. Every file is written atomically, so a run killed at any moment resumes.

    Raises
    ------
    BrainTumorError
        On bad settings or data, a folder in use or holding another run, and a run whose loss
        or weights stop being finite (`TrainingDiverged`).
    OutputError
        When the disk refuses a write; the last complete epoch's files are kept.
    """
    out = Path(config.out)
    device = distributed.rank_device(resolve_device(config.device))  # a GPU that is not there fails here
    with distributed.process_group(device), locked_folder(out), _remembering_interrupts() as interrupts:
        try:
            return _train(config, device, interrupts)
        except OutputError as exc:
            if exc.reason != "no-space":
                raise
            raise exc.with_hint(f"free some space, then continue with `braintumor train --out {out} --resume`: "
                                "it goes on from the last complete epoch, whose files are kept") from None


def _train(config: TrainConfig, device: torch.device, interrupts: _Interrupts) -> Path:
    out = Path(config.out)
    if not distributed.is_main():
        config = replace(config, progress=False)  # rank 0 shows the progress
    # Refused, resumed or started, by rank 0; the settings recorded in config.json.
    run = distributed.broadcast(_open_run(out, config) if distributed.is_main() else None, "opening the run folder")
    check_shared_folder(out)
    if run.finished:
        log(f"{out} has finished training; nothing to resume (raise --epochs or --patience to train on)")
        return out
    started = time.time()  # the time limit counts from here, decoding the images included
    if config.threads:
        torch.set_num_threads(cap_threads(config.threads))
    generator = seed_everything(config.seed if config.train_seed is None else config.train_seed)

    # ---- data and model (a start that fails here leaves the folder as it was) -------------------
    with run.undone_on_error():
        data = load_run_data(config)
        model = create_model(config.backbone, len(CLASSES), data.preprocess, config.pretrained, config.weights,
                             config.drop_rate, config.drop_path_rate).to(memory_format=torch.channels_last)
        frozen = freeze_early_layers(model, config.freeze_blocks)
        teachers = load_teachers(config.teacher, data.dataset, data.split, data.preprocess, CLASSES) if config.teacher else []
    distributed.check_same(split_fingerprint(data), "data or split")
    if run.state is None:
        run.start_files(data)  # an earlier run's files go, split.json is written
    if config.probe_head and run.state is None:
        fit_linear_head(model, data.images, data.labels, data.split, epoch_size(config, 0),
                        autocast_dtype(torch.device("cpu"), config.bf16) is not None, config.progress)
    if device.type != "cpu" or distributed.world_size() > 1:
        log(f"training on {describe(device)}" + (f", {distributed.world_size()} processes" if distributed.world_size() > 1 else ""))
        model, teachers = model.to(device), [t.to(device) for t in teachers]
    dtype = autocast_dtype(device, config.bf16)  # mixed precision: bfloat16, or float16 with a gradient scaler
    if config.bf16 and dtype is None:
        log("note: this CPU has no bfloat16 instructions (AVX-512 BF16, AMX); training in float32, several times "
            "faster here than emulated bfloat16")
    scaler = grad_scaler(device, dtype)
    forward = torch.compile(model) if config.compile else model
    # The exponential moving average of the weights is what is validated and saved, if used.
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay else None
    kept = ema.module if ema is not None else model
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay, config.layer_decay), lr=config.lr)
    norms = BatchNormSteps(model)
    train_groups = _train_groups(data.dataset, data.split, config.progress) if config.sample_groups else None
    per_epoch = len(np.unique(train_groups)) if train_groups is not None else len(data.split.train)
    steps_per_epoch = _steps_per_epoch(per_epoch, config.batch_size)
    total_steps, warmup_steps = steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch)
    source_weights = _source_weights(source_names(data.dataset, data.split.train), config.balance_sources)
    info = _model_info(config, data)
    done = _restore(run, info, model, ema, optimizer, generator) if run.state else Progress()
    write_text(out / "metrics.jsonl", done.metrics_lines())

    # ---- loop -----------------------------------------------------------------------------------
    step = done.epoch * steps_per_epoch
    for epoch in range(done.epoch, config.epochs):
        if done.bad_epochs >= config.patience:  # (a resumed run that had stopped early)
            break
        epoch_started = time.time()
        _train_mode(model, frozen)
        order = epoch_order(data.split.train, train_groups, source_weights, generator)
        # Progressive resizing: early epochs see smaller images (cheaper steps), the last ones
        # the served size, so the kept weights and batch-norm statistics match what is served.
        size = epoch_size(config, epoch)
        tally = Tally()
        loop_started = time.perf_counter()
        bar = tqdm(batch_rows(order, steps_per_epoch, config.batch_size), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress)
        for rows in bar:
            _set_lr(optimizer, _lr_at(step, total_steps, warmup_steps, config.lr))
            optimizer.zero_grad(set_to_none=True)
            norms.start()
            loss_sum = accumulate_gradients(forward, data, rows, size, config, step_seed(generator), teachers, device,
                                            dtype, scaler, norms, tally)
            loss = sum_over_ranks(model, norms, loss_sum) / len(rows)  # the global batch's mean loss, on every rank
            check_loss(loss, epoch, step, config, done)  # a loss that is not finite, or has blown up, stops the run
            scaler.step(optimizer)  # (the scaler passes the gradients through unless in float16)
            scaler.update()
            if ema is not None:
                ema.update(model, step=step)
            step += 1
            interrupts.check()
            bar.set_postfix(tally.postfix())
        bar.close()
        if device.type != "cpu" and tally.loader_bound():
            log(f"note: loading and augmenting images on the CPU ({tally.load_rate():.0f} images/s) is slower than "
                f"the training step on {device} ({tally.step_rate():.0f} images/s): the GPU waits for the CPU")
        check_finite_weights({model, kept}, epoch, step, config, done)

        record = {"epoch": epoch + 1, **tally.summed(time.perf_counter() - loop_started), **validate(kept, data, config, device),
                  "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - started, 1)}
        log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}")
        improved = done.add(record)  # the best epoch on validation so far?
        if improved:
            info.metrics = {"val_acc": record["val_acc"], "val_loss": record["val_loss"], "best_epoch": epoch + 1}
        save_epoch(out, improved, kept, info, _training_state(run, done, model, ema, optimizer, generator, info))
        if done.bad_epochs >= config.patience:
            log(f"early stopping: validation has not improved for {config.patience} epochs")
            break
        out_of_time = _out_of_time(config, started, epoch_started, epoch, POSTHOC_EPOCHS * len(data.split.train) / per_epoch)
        if distributed.broadcast(out_of_time, "receiving rank 0's time check"):  # rank 0's clock decides for all
            break

    # ---- finalise: the best epoch's weights, with what is fitted after training ---------------
    # Post-hoc steps (calibration, out-of-distribution statistics, ...) fit on the training or
    # validation part only, update `info`, and are saved with the weights.
    distributed.barrier("waiting for rank 0's last checkpoint")  # (in a data-parallel job: read next by every rank)
    model, info = load_checkpoint(out / "model.safetensors")
    fit_posthoc(model.to(device), info, data.images, data.labels, data.split)
    info.metrics["train_minutes"] = round((time.time() - started) / 60, 2)
    save_checkpoint(out / "model.safetensors", model, info)
    distributed.barrier("waiting for rank 0 to save the model")  # read next (evaluate) on every rank
    return out


def check_shared_folder(out: Path) -> None:
    """Raise a `BrainTumorError` on a rank that does not see the run folder rank 0 has opened:
    the ranks of a job on several machines read its checkpoints (to resume, to evaluate)."""
    if not (out / CONFIG_FILE).is_file():
        raise BrainTumorError(f"rank {distributed.rank()} does not see {out / CONFIG_FILE}, which rank 0 wrote",
                              "give --out a folder on a file system that every machine of the job shares")


def split_fingerprint(data: RunData) -> str:
    """A digest of the run's data and split, for checking that every rank drew the same."""
    digest = hashlib.sha256(data.dataset.fingerprint().encode())
    for part in (data.split.train, data.split.val, data.split.test, data.labels):
        digest.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    return digest.hexdigest()


# ---- the run folder: refused, resumed or started ---------------------------------------------------


# ---- data and model --------------------------------------------------------------------------------


def load_run_data(config: TrainConfig) -> RunData:
    """Scan and decode the dataset, draw the run's split and apply its label corrections."""
    preprocess = Preprocess(image_size=config.image_size, crop_foreground=config.crop_foreground,
                            equalize=config.equalize)
    dataset = scan(config.data, config.class_map)
    images, dataset = load_images(dataset, preprocess, progress=config.progress)
    split = run_split(dataset, asdict(config), progress=config.progress)
    for name, idx in (("train", split.train), ("validation", split.val)):
        if len(idx) == 0:
            raise BrainTumorError(f"the {name} set is empty", "add images, lower --val-fraction/--test-fraction or raise --train-fraction")
    labels = run_labels(dataset, asdict(config), np.r_[split.train, split.val])  # corrections applied
    if config.relabel and split.groups is not None:
        stale = uncorrected_copies(split.groups, labels, dataset.labels, np.r_[split.train, split.val])
        if len(stale):
            log(f"warning: {len(stale)} near-duplicate copies of corrected images keep their folder's label, e.g. "
                f"{dataset.paths[stale[0]]}; add them to the --relabel file too (braintumor audit lists the copies)")
    return RunData(preprocess, dataset, images, labels, split)


def _model_info(config: TrainConfig, data: RunData) -> ModelInfo:
    """What the checkpoints store beside the weights."""
    return ModelInfo(classes=list(CLASSES), backbone=config.backbone, preprocess=data.preprocess,
                     drop_rate=config.drop_rate, tta=config.tta, tta_view=MirrorView(angle=config.tta_angle),
                     train_config=asdict(config), data_fingerprint=data.dataset.fingerprint())


def _steps_per_epoch(per_epoch: int, batch_size: int) -> int:
    steps = math.ceil(per_epoch / batch_size)
    if steps > 1 and per_epoch % batch_size == 1:
        steps -= 1  # a lone last image joins the batch before it (batch norm needs two)
    return steps


# ---- one epoch: its images, its batches, the loss --------------------------------------------------


def epoch_order(train: np.ndarray, groups: np.ndarray | None, source_weights: torch.Tensor | None,
                generator: torch.Generator) -> np.ndarray:
    """The training images (rows) one epoch shows, in order: every one once, shuffled; or one
    per near-duplicate group (`groups`, `one_per_group`); or drawn with `source_weights`."""
    if groups is not None:
        return train[one_per_group(groups, generator)]
    if source_weights is None:
        return train[torch.randperm(len(train), generator=generator).numpy()]
    return train[torch.multinomial(source_weights, len(train), True, generator=generator).numpy()]


def batch_rows(order: np.ndarray, steps: int, batch_size: int):
    """The rows of each of an epoch's `steps` batches (the last one takes what is left)."""
    for b in range(steps):
        end = (b + 1) * batch_size if b < steps - 1 else len(order)
        yield torch.from_numpy(order[b * batch_size : end])


@dataclass
class Batch:
    """A training batch: images `x` and labels `y`; with mixup, each image blended with image
    `perm` of the batch, its own weight `lam`."""

    x: torch.Tensor
    y: torch.Tensor
    perm: torch.Tensor | None = None
    lam: float = 1.0

    def target(self) -> torch.Tensor:
        """The label a prediction must name to count as right (with mixup, the larger share's)."""
        return self.y[self.perm] if self.perm is not None and self.lam < 0.5 else self.y


def make_batch(data: RunData, rows: torch.Tensor, size: int, config: TrainConfig, generator: torch.Generator,
               device: torch.device = torch.device("cpu")) -> Batch:
    """The images of `rows` at `size` pixels, augmented (flips, rotation, ...; then erasing,
    contrast remapping and degradation where the config asks), and mixed up if it asks; on the
    CPU, then moved to `device`."""
    x = augment(to_float(data.images_t[rows], size), generator)
    if config.erase_prob:
        x = erase(x, config.erase_prob, generator)
    if config.contrast_prob:
        x = remap_contrast(x, config.contrast_prob, generator)
    if config.degrade_prob:
        x = degrade(x, config.degrade_prob, generator)
    batch = Batch(x, data.labels_t[rows])
    if config.mixup_alpha:
        batch.x, batch.perm, batch.lam = mixup(x, config.mixup_alpha, generator)
    if device.type != "cpu":
        batch.x = to_device(batch.x.pin_memory() if device.type == "cuda" else batch.x, device)
        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
        batch.y = to_device(batch.y, device)
        batch.perm = None if batch.perm is None else to_device(batch.perm, device)
    return batch


def batch_loss(model, batch: Batch, teachers: list, config: TrainConfig, device: torch.device = torch.device("cpu"),
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of a batch and its loss: cross-entropy with the labels (both labels of a
    mixed image, by their shares), and with the teachers' softened predictions if distilling.
    The forward pass runs in `dtype` autocast on `device` (None: float32)."""
    cpu_kernels = depthwise_in_float32(model) if device.type == "cpu" else contextlib.nullcontext()
    with autocast(device, dtype), cpu_kernels:
        logits = model(batch.x)
    logits = logits.float()
    loss = F.cross_entropy(logits, batch.y, label_smoothing=config.label_smoothing)
    if batch.perm is not None:
        loss = batch.lam * loss + (1 - batch.lam) * F.cross_entropy(logits, batch.y[batch.perm],
                                                                    label_smoothing=config.label_smoothing)
    if teachers:  # the teachers' view of the same (augmented, mixed) batch
        soft = teacher_probs(teachers, batch.x, config.distill_temperature, dtype)
        loss = distill_loss(logits, soft, config.distill_weight, config.distill_temperature, loss)
    return logits, loss


def step_seed(generator: torch.Generator) -> int:
    """The seed of one step's augmentation and dropout, drawn from the run's generator (the same
    on every rank, and restored on resume)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def micro_batches(rows: torch.Tensor, config: TrainConfig, world: int) -> list[torch.Tensor]:
    """A global batch's rows cut into near-equal micro-batches: ``batch_size / micro_batch`` of
    them rounded up to a multiple of the `world` size, or one per rank when ``micro_batch`` is not
    given; fewer for a short last batch, so that each has two images (batch norm needs two)."""
    micro = config.micro_batch or math.ceil(config.batch_size / world)
    count = math.ceil(math.ceil(config.batch_size / micro) / world) * world
    return list(torch.tensor_split(rows, max(1, min(count, len(rows) // 2))))


def accumulate_gradients(model, data: RunData, rows: torch.Tensor, size: int, config: TrainConfig, seed: int,
                         teachers: list, device: torch.device, dtype, scaler, norms: "BatchNormSteps",
                         tally: "Tally") -> float:
    """Forward and backward passes over this rank's share of the micro-batches of a global batch
    (`rows`): micro-batch k goes to rank ``k % world``, is augmented with seed ``seed + 2k`` and
    dropped out with ``seed + 2k + 1``, and adds the gradient of its share of the global batch's
    mean loss. Returns the summed loss of this rank's images."""
    parts, world = micro_batches(rows, config, distributed.world_size()), distributed.world_size()
    loss_sum = 0.0
    for k in range(distributed.rank(), len(parts), world):
        loading = time.perf_counter()
        batch = make_batch(data, parts[k], size, config, torch.Generator().manual_seed(seed + 2 * k), device)
        stepping = time.perf_counter()
        torch.manual_seed(seed + 2 * k + 1)  # dropout and stochastic depth
        logits, loss = batch_loss(model, batch, teachers, config, device, dtype)
        scaler.scale(loss * (len(batch.y) / len(rows))).backward()  # (the scaler passes it through unless in float16)
        norms.collect()
        loss_sum += loss.item() * len(batch.y)
        tally.add(logits, batch, loss, stepping - loading, time.perf_counter() - stepping)
    return loss_sum


class BatchNormSteps:
    """Batch-norm running statistics that move once per optimiser step, toward the mean of the
    statistics of the step's micro-batches on all ranks: the same whatever the number of ranks
    and micro-batches (with one micro-batch in one process, as plain batch norm does).

    Call `start` before a step's micro-batches, `collect` after each one's forward pass, and
    let `sum_over_ranks` finish (`delta` and `count`, summed over the ranks, go to `finish`).
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    def start(self) -> None:
        self.training = [m for m in self.layers if m.training]  # (frozen layers keep their statistics)
        self.before = [(m.running_mean.clone(), m.running_var.clone()) for m in self.training]
        self.delta = [torch.zeros_like(t) for pair in self.before for t in pair]
        self.count = 0

    def collect(self) -> None:
        """Take a micro-batch's move of the statistics out of the layers, into `delta`."""
        for i, (m, (mean, var)) in enumerate(zip(self.training, self.before)):
            self.delta[2 * i] += m.running_mean - mean
            self.delta[2 * i + 1] += m.running_var - var
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked -= 1
        self.count += 1

    def finish(self, delta: list[torch.Tensor], count: int) -> None:
        """Move the statistics by the mean of the `count` micro-batches' moves (summed in `delta`)."""
        for i, (m, (mean, var)) in enumerate(zip(self.training, self.before)):
            m.running_mean.copy_(mean + delta[2 * i] / count)
            m.running_var.copy_(var + delta[2 * i + 1] / count)
            m.num_batches_tracked += 1


def sum_over_ranks(model: nn.Module, norms: BatchNormSteps, loss_sum: float) -> float:
    """Sum the ranks' gradients, batch-norm moves and losses in one all-reduce (a no-op in one
    process), leaving every rank with the same gradients and statistics; returns the summed
    loss of the global batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed.world_size() == 1:
        norms.finish(norms.delta, norms.count)
        return loss_sum
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]  # (a rank with no micro-batch)
    tail = torch.tensor([loss_sum, norms.count], device=params[0].device)
    flat = torch.cat([t.reshape(-1).float() for t in grads + norms.delta] + [tail])
    distributed.all_reduce_sum(flat)
    chunks = list(torch.split(flat, [t.numel() for t in grads + norms.delta] + [2]))
    for p, chunk in zip(params, chunks):
        p.grad = torch.empty_like(p).copy_(chunk.view(p.shape))  # (in the parameter's dtype and memory layout)
    norms.finish([c.view(t.shape) for c, t in zip(chunks[len(params) : -1], norms.delta)], int(chunks[-1][1].item()))
    return float(chunks[-1][0].item())


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def _train_mode(model, frozen) -> None:
    model.train()
    for module in frozen:
        module.eval()  # frozen layers keep their ImageNet batch-norm statistics


class Tally:
    """An epoch's running training loss and accuracy."""

    def __init__(self):
        self.seen = self.correct = 0
        self.loss_sum = self.load_s = self.step_s = 0.0

    def add(self, logits: torch.Tensor, batch: Batch, loss: torch.Tensor, load_s: float = 0.0, step_s: float = 0.0) -> None:
        """Count a batch: its logits and loss, and the seconds spent making it and stepping on it."""
        self.seen += len(batch.y)
        self.correct += (logits.argmax(1) == batch.target()).sum().item()
        self.loss_sum += loss.item() * len(batch.y)
        self.load_s += load_s
        self.step_s += step_s

    def load_rate(self) -> float:
        """Images per second of loading and augmenting (on the CPU)."""
        return self.seen / max(self.load_s, 1e-9)

    def step_rate(self) -> float:
        """Images per second of the training step (forward, backward, optimiser)."""
        return self.seen / max(self.step_s, 1e-9)

    def loader_bound(self) -> bool:
        """Whether preparing the batches took longer than training on them."""
        return self.load_s > self.step_s

    def postfix(self) -> dict:
        seen = max(self.seen, 1)
        return {"loss": f"{self.loss_sum / seen:.3f}", "acc": f"{self.correct / seen:.3f}",
                "load": f"{self.load_rate():.0f} img/s", "step": f"{self.step_rate():.0f} img/s"}

    def summed(self, seconds: float) -> dict:
        """The epoch's training loss and accuracy over every rank's images, and the training
        images per second of all ranks together (`seconds`: the epoch's loop, on rank 0's clock)."""
        seen, correct, loss_sum = distributed.all_reduce_sum(
            torch.tensor([self.seen, self.correct, self.loss_sum], dtype=torch.float64), "summing the epoch's figures").tolist()
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "train_images_per_s": round(seen / seconds, 1)}


# ---- divergence ------------------------------------------------------------------------------------


def _diverged(config: TrainConfig, done: "Progress", what: str) -> TrainingDiverged:
    kept = (f"the checkpoint of epoch {done.epoch}, the last good one, is kept in {config.out}" if done.epoch
            else "no epoch had ended, so no checkpoint was written")
    return TrainingDiverged(f"training diverged {what}",
                            f"lower --lr (now {config.lr:g}) or --weight-decay (now {config.weight_decay:g}) and train "
                            f"again with --overwrite or into another --out; {kept}")


# A batch's mean loss above this (in nats per image: a cross-entropy of 1,000 means logits a
# thousand apart) is a run that has blown up, not one that is learning: at the start it is about
# ln 4 = 1.39, and it falls from there.
DIVERGED_LOSS = 1e3


def check_loss(value: float, epoch: int, step: int, config: TrainConfig, done: "Progress") -> None:
    """Raise `TrainingDiverged` if the batch's mean loss is not a finite number, or has blown up
    past `DIVERGED_LOSS` (checked before the optimiser steps)."""
    if not math.isfinite(value) or value > DIVERGED_LOSS:
        raise _diverged(config, done, f"at epoch {epoch + 1} step {step + 1} (loss {value:.4g})")


def check_finite_weights(models, epoch: int, step: int, config: TrainConfig, done: "Progress") -> None:
    """Raise `TrainingDiverged` if a weight or batch-norm statistic of one of `models` (the
    trained one, its average) is not finite (checked before an epoch's checkpoint is written)."""
    for model in models:
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise _diverged(config, done, f"at epoch {epoch + 1} step {step} (non-finite weights in {name})")


# ---- validation, the checkpoint, the time limit ----------------------------------------------------


def validate(model, data: RunData, config: TrainConfig, device: torch.device | None = None) -> dict:
    """Loss and accuracy of `model` on the validation images (no test-time view)."""
    probs = predict_images(model, data.images[data.split.val], tta=False, bf16=config.bf16, device=device)
    y = data.labels[data.split.val]
    return {"val_loss": float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean()),
            "val_acc": float((probs.argmax(1) == y).mean())}


def _out_of_time(config: TrainConfig, started: float, epoch_started: float, epoch: int, posthoc_epochs: float) -> bool:
    """Whether the run's time limit stops it before epoch ``epoch + 1`` (logged if so)."""
    if not config.time_limit_min or epoch + 1 >= config.epochs:
        return False
    now = time.time()
    if next_epoch_fits(now - started, now - epoch_started, epoch_size(config, epoch), epoch_size(config, epoch + 1),
                       config.image_size, config.time_limit_min, posthoc_epochs):
        return False
    log(f"stopping after {epoch + 1} epochs: another would not end within the "
        f"{config.time_limit_min:g}-min limit ({(now - started) / 60:.1f} min so far)")
    return True


def fit_posthoc(model, info: ModelInfo, images: np.ndarray, labels: np.ndarray, split) -> None:
    """Fit what is fitted after training, on the training and validation parts only, into `info`:
    the softmax temperature (calibration, on validation logits) and the out-of-distribution
    statistics (on training features, threshold on validation)."""
    val_probs = predict_images(model, images[split.val], tta=info.tta, tta_view=info.tta_view)
    info.temperature = fit_temperature(as_logits(val_probs), labels[split.val])
    info.metrics["val_acc_final"] = float((val_probs.argmax(1) == labels[split.val]).mean())
    fit_model_ood(model, info, images[split.train], labels[split.train], images[split.val])
