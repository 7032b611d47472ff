"""`TrainConfig`: everything that defines a training run, stored in its checkpoint.

Torch-free, so that the command line can build its help (defaults and bounds) without loading
PyTorch. Every numeric field's bounds are declared once, in `braintumor.options.RULES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from braintumor.data.classes import CLASSES
from braintumor.data.dataset import data_root, default_data_dir
from braintumor.errors import BrainTumorError
from braintumor.model import DEFAULT_BACKBONE
from braintumor.options import RULES, check


# Options that may be None: train_seed (= seed), threads (= every core), time_limit_min (no limit).
_OPTIONAL = {"train_seed", "threads", "time_limit_min", "micro_batch"}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the checkpoint."""

    # The data folder, or a list of several collections' folders, trained on as one pool (their
    # near-duplicate groups formed across all of them under 'dedup' and 'cross').
    data: str | list = field(default_factory=lambda: str(default_data_dir()))
    out: str = "runs/latest"
    protocol: str = "original"
    # Under protocol 'cross': the collection tested on (its name, see `collection_name`; default:
    # the last of `data`), trained on the others; its images with a copy in them are left out.
    test_collection: str = ""
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
    batch_size: int = 32  # the global batch: in a data-parallel job, shared out among the processes
    # Images per forward pass, over which batch norm computes its statistics: each global batch is
    # cut into batch_size / micro_batch micro-batches (a multiple of the processes), gradients
    # accumulated. None: one per process. Given, runs on any number of processes take the same steps.
    micro_batch: int | None = None
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
    # Mixed precision where the hardware does it natively: bfloat16 autocast on CPUs with bfloat16
    # instructions (float32 on others), bfloat16 or float16 with a gradient scaler on GPUs.
    bf16: bool = True
    device: str = "auto"  # auto: a CUDA GPU, then Apple's MPS, then the CPU (braintumor.model.device)
    compile: bool = False  # torch.compile the network for training (pays off on GPUs, after a minute of compiling)
    tta: bool = True
    tta_angle: float = 8.0  # the test-time view: the mirror rotated by this many degrees
    threads: int | None = None
    # Wall-clock budget of the whole run, decoding the images included: an epoch starts only when
    # it and the post-hoc fits are projected to end within it (see `next_epoch_fits`). 0 or None: no limit.
    time_limit_min: float | None = None
    class_map: dict = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False  # start over in an `out` that holds a run (else that is refused)
    progress: bool = True

    def __post_init__(self):
        for f in fields(self):  # every bound is declared once, in braintumor.options
            if f.name in RULES and RULES[f.name].kind in ("int", "float"):
                setattr(self, f.name, check(f.name, getattr(self, f.name), allow_none=f.name in _OPTIONAL))
        if self.folds and self.fold >= self.folds:
            raise BrainTumorError(f"fold must be in 0..folds-1, got fold {self.fold} of {self.folds}")
        if isinstance(self.data, (list, tuple)):
            if not self.data:
                raise BrainTumorError("data is an empty list", "give one data folder, or a list of several")
            self.data = [os.path.abspath(check("data", d)) for d in self.data]
            if len(self.data) == 1:
                self.data = self.data[0]
        for name in ("data", "out", "backbone"):
            if name != "data" or isinstance(self.data, str):
                check(name, getattr(self, name))
        check("weights", self.weights, allow_none=True)
        self.device = check("device", self.device).strip().lower()
        if not isinstance(self.exclude, (list, tuple)) or not all(isinstance(p, str) for p in self.exclude):
            raise BrainTumorError(f"exclude must be a list of image paths, got {self.exclude!r}")
        if isinstance(self.data, str):
            self.data = os.path.abspath(self.data)
        if self.protocol == "cross" and isinstance(self.data, str):
            raise BrainTumorError("protocol 'cross' needs two or more data folders",
                                  "give --data once per collection: trained on all but --test-collection, tested on it")
        if self.test_collection and self.protocol != "cross":
            raise BrainTumorError("test_collection applies to protocol 'cross' only", "add --protocol cross, or drop --test-collection")
        root = str(data_root(self.data))
        self.exclude = sorted({_under(path, root) for path in self.exclude})
        if not isinstance(self.relabel, dict) or not all(
                isinstance(p, str) and c in CLASSES for p, c in self.relabel.items()):
            raise BrainTumorError(f"relabel must map image paths to classes ({', '.join(CLASSES)}), got {self.relabel!r}")
        self.relabel = {_under(path, root): c for path, c in sorted(self.relabel.items())}
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
