"""``braintumor train``: train a model (or K cross-validation folds), then evaluate its test split.

Also home of the recipe options, which ``compare`` shares: their help text states each option's
accepted values (`braintumor.options.RULES`) and default (`TrainConfig`), both declared once."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path

from braintumor.cli.common import add_command, add_data, add_device, add_nproc, add_out, data_parallel, data_of, print_json, print_metrics
from braintumor.errors import BrainTumorError
from braintumor.options import PROTOCOLS, RULES, cli_type

PROTOCOL_HELP = ("original: pooled data, random 10%% test split; official: Training vs Testing folders; "
                 "dedup: original with near-duplicate groups kept on one side; cross (several --data): train on "
                 "all collections but one, test on that one's images that have no copy in the others")

# The recipe: (option name in TrainConfig, help). Values are checked by RULES[name].
RECIPE_OPTIONS = [
    ("train_seed", "seed of the initialisation, augmentation and data order only, the split staying that of --seed: runs that differ in it alone are a deep ensemble of one split, e.g. teachers for --teacher (default: --seed)"),
    ("backbone", "timm model name"),
    ("weights", "ImageNet weights file (.safetensors or state dict) for the backbone"),
    ("image_size", "network input side in pixels"),
    ("low_res_scale", "progressive resizing: the first --low-res-fraction of the epochs train on images scaled by this (1: off)"),
    ("low_res_fraction", "share of the epochs, from the first, trained at --low-res-scale (0: off)"),
    ("freeze_blocks", "freeze the stem and this many early stages of the backbone"),
    ("epochs", "maximum epochs"),
    ("batch_size", "mini-batch size: the global batch of all processes together"),
    ("micro_batch", "images per forward pass, over which batch norm takes its statistics: each batch is cut into batch-size/micro-batch micro-batches (rounded to a multiple of the processes), their gradients accumulated; give it to make runs on any number of processes take the same steps (default: one per process)"),
    ("lr", "peak learning rate of AdamW"),
    ("weight_decay", "AdamW weight decay"),
    ("label_smoothing", "label smoothing of the cross-entropy (0.1 costs calibration)"),
    ("layer_decay", "layer-wise learning-rate decay: each backbone block learns at this times the rate of the next, the head at --lr (1: off)"),
    ("ema_decay", "validate and keep an exponential moving average of the weights with this decay, e.g. 0.998 (0: off)"),
    ("drop_rate", "dropout before the dense layer"),
    ("drop_path_rate", "stochastic depth: skip residual blocks at random while training, the deepest with this probability, e.g. 0.2 (0: off)"),
    ("mixup_alpha", "mixup: train on blends of image pairs and of their labels, blend weight ~ Beta(a, a), e.g. 0.2 (0: off)"),
    ("erase_prob", "random erasing: share of training images that get one random rectangle overwritten by noise, e.g. 0.5"),
    ("contrast_prob", "contrast remapping: share of training images whose intensities pass through a random monotone curve, half of them with the head inverted (T1-like to T2-like), e.g. 0.5"),
    ("degrade_prob", "degradation: share of training images blurred by a random loss of resolution (shrunk to 35-85%% of their side and enlarged back) plus Gaussian noise, e.g. 0.5"),
    ("balance_sources", "draw each epoch's images with weight n^-A, n the training images of the same top-level folder (Training/, Testing/): 1 shows every source equally often (0: off)"),
    ("patience", "early stopping: epochs without validation improvement"),
    ("val_fraction", "share of the training part used for validation"),
    ("test_fraction", "share held out for testing under 'original' and 'dedup'"),
    ("train_fraction", "train on this stratified share of the training part only, duplicate groups kept whole; validation and test as for the full split (learning curves)"),
    ("distill_weight", "with --teacher: weight of the teachers' term in the loss, the labels' cross-entropy getting the rest"),
    ("distill_temperature", "with --teacher: softmax temperature of the teachers' and the student's distributions in that term"),
    ("tta_angle", "test-time view: the mirror rotated by this many degrees (0: plain mirror)"),
    ("threads", "CPU threads (default: every core; more than the cores is capped at them)"),
    ("time_limit_min", "wall-clock budget of the run in minutes, decoding included: an epoch starts only if it and the fits after training are projected to end within it; a --resume gets a new budget (default: no limit)"),
]


def _defaults() -> dict:
    from braintumor.training import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def _described(name: str, text: str, defaults: dict) -> str:
    """Help text with the accepted values and the default, from their one declaration."""
    default = defaults.get(name)
    shown = "" if "(default:" in text or default in (None, "") else f"; default: {default:g}" if isinstance(default, float) else f"; default: {default}"
    return f"{text} [{RULES[name].describe()}{shown}]"


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The options of a training configuration, shared by `train` and `compare`."""
    defaults = _defaults()
    for name, text in RECIPE_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=cli_type(name), help=_described(name, text, defaults))
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None, help="start from random weights")
    p.add_argument("--no-crop", dest="crop_foreground", action="store_false", default=None, help="do not crop images to the head's bounding box")
    p.add_argument("--equalize", action="store_true", default=None, help="equalise each image's intensity histogram over the head's pixels, in training and wherever the model is used")
    p.add_argument("--sample-groups", action="store_true", default=None, help="each epoch, train on one randomly drawn image of every near-duplicate group instead of every image (copies count once; shorter epochs)")
    p.add_argument("--probe-head", action="store_true", default=None, help="linear probing first (LP-FT): fit the head by logistic regression on the frozen ImageNet features before fine-tuning")
    p.add_argument("--exclude", dest="exclude_file", type=cli_type("exclude"), metavar="FILE", help="leave the images FILE lists out of training and validation (the test split stays as without them): the 'path' column of a CSV, such as label-issues' label_issues.csv, or one path per line, relative to --data")
    p.add_argument("--relabel", dest="relabel_file", type=cli_type("relabel"), metavar="FILE", help="train and validate on the corrected labels FILE gives: a CSV with 'path' and 'corrected' columns (rows left empty keep their label); paths relative to --data; the split is drawn and the test part scored with the folders' labels")
    p.add_argument("--teacher", action="extend", nargs="+", type=cli_type("teacher"), metavar="RUN", help="knowledge distillation: also match the mean softened predictions of these finished runs (or checkpoints) of the same split; given several times (or --teacher A B), their ensemble")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", default=None, help="train in float32 instead of mixed precision (bfloat16 autocast on CPUs with bfloat16 instructions and on GPUs; CPUs without them train in float32 anyway)")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None, help="no test-time augmentation (averaging each image with its rotated mirror)")
    add_device(p)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the network for training: faster steps on a GPU after a minute or two of compiling")


def add_run_args(p: argparse.ArgumentParser, out_default: str, out_help: str) -> None:
    """Data, output folder, protocol seed, --resume/--overwrite: what `train` and `compare` share."""
    add_data(p)
    add_out(p, out_help, default=out_default)
    p.add_argument("--seed", type=cli_type("seed"), help=f"seed of the split, and of the initialisation and augmentation unless --train-seed is given [{RULES['seed'].describe()}; default: 0]")
    add_recipe_args(p)
    p.add_argument("--resume", action="store_true", default=None, help="continue in --out: finished runs are kept, an interrupted one goes on from its last checkpoint with the settings it started with")
    p.add_argument("--overwrite", action="store_true", default=None, help="start over in an --out that holds a run, deleting its checkpoints and report (without it, that is refused)")
    add_nproc(p)


def config_kwargs(args) -> dict:
    """The `TrainConfig` fields that `train` or `compare` was given (those left out keep their
    defaults, or a resumed run's own values)."""
    from braintumor.data.classes import parse_class_map
    from braintumor.distributed import is_main
    from braintumor.data.dataset import read_path_list, read_relabel_list
    from braintumor.training import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.data:
        kwargs["data"] = data_of(args)
    if args.class_map:
        kwargs["class_map"] = parse_class_map(args.class_map)
    if args.exclude_file:
        kwargs["exclude"] = read_path_list(args.exclude_file)
    if args.relabel_file:
        kwargs["relabel"] = read_relabel_list(args.relabel_file)
    kwargs["progress"] = not args.quiet and is_main()  # (in a data-parallel job, rank 0 shows the progress)
    return kwargs


def register(sub) -> None:
    p = add_command(sub, "train", "train a model, then evaluate it on the held-out test split and write a report")
    add_run_args(p, "runs/latest", "run folder for checkpoints, metrics and report (default: runs/latest)")
    p.add_argument("--protocol", choices=PROTOCOLS, help=PROTOCOL_HELP + " (default: original)")
    p.add_argument("--test-collection", type=cli_type("test_collection"), metavar="NAME",
                   help="with --protocol cross: the collection tested on, by its folder's name (default: the last --data)")
    p.add_argument("--folds", type=cli_type("folds"), help="cross-validate: train and test on K group-aware folds, report mean ± std of every metric")
    p.add_argument("--no-test", dest="test", action="store_false", help="do not evaluate the test split after training: print validation figures only, for choosing a recipe without looking at the test images (evaluate it later with 'braintumor evaluate')")
    p.add_argument("--json", action="store_true", help="print the test metrics (with --no-test: the validation figures) as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    return data_parallel(args, _run)


def _run(args, device) -> int:
    from braintumor import distributed

    from braintumor.data.dataset import default_data_dir
    from braintumor.evaluation import evaluate
    from braintumor.training import TrainConfig, train
    from braintumor.training.runfolder import stored_config

    names = {f.name for f in fields(TrainConfig)}
    kwargs = config_kwargs(args)
    crossval = bool(args.folds)
    stored = stored_config(args.out) if args.resume else None
    if stored and crossval:
        raise BrainTumorError(f"{args.out} holds one training run, not a cross-validation",
                              "resume it without --folds, or give the cross-validation's own folder")
    if args.resume and stored is None:  # a cross-validation folder: its folds hold the settings
        stored = stored_config(Path(args.out) / "fold1")
        crossval = stored is not None or crossval
    if stored:  # a resumed run keeps the settings it started with, except those given again
        kept = names - {"overwrite"} - ({"fold"} if crossval else set())
        kwargs = {**{k: v for k, v in stored.items() if k in kept}, **kwargs}
    kwargs.setdefault("data", str(default_data_dir()))
    if not args.test and crossval:
        raise BrainTumorError("--no-test does not combine with --folds: cross-validation tests every fold",
                              "drop --no-test, or --folds to train one model")
    if crossval:  # (a resumed fold of a cross-validation, with its stored folds, trains as one run)
        from braintumor.evaluation.crossval import cross_validate

        result = cross_validate(TrainConfig(**kwargs))
        if distributed.is_main():
            print_crossval(result, args.json)
        return 0
    out = train(TrainConfig(**kwargs))
    main = distributed.is_main()  # in a data-parallel job, every rank evaluates its share; rank 0 reports
    if not args.test:
        if main:
            print_validation(out, args.json)
        return 0
    metrics = evaluate(out / "model.safetensors", kwargs["data"], progress=main and not args.quiet, device=device)
    if main:
        print_metrics(metrics, args.json)
    return 0


def print_validation(out: Path, as_json: bool) -> None:
    """What a run trained with --no-test shows: validation figures only, and how to test later."""
    from braintumor.model.checkpoint import read_info

    info, _ = read_info(out / "model.safetensors")
    shown = {k: info.metrics[k] for k in ("val_acc", "val_loss", "best_epoch", "val_acc_final", "train_minutes") if k in info.metrics}
    shown = {**shown, "temperature": info.temperature, "model": str(out / "model.safetensors"), "test": "not evaluated"}
    if as_json:
        print_json(shown)
        return
    print(f"validation accuracy {100 * shown['val_acc']:.2f}% at epoch {shown['best_epoch']}"
          + (f", {100 * shown['val_acc_final']:.2f}% with the test-time view" if "val_acc_final" in shown else ""))
    print(f"test split not evaluated; once the recipe is chosen: braintumor evaluate -m {out / 'model.safetensors'}")


def print_crossval(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    print(f"{result['folds']}-fold cross-validation, {result['protocol']} protocol:")
    for name in ("accuracy", "macro_f1", "macro_roc_auc", "ece"):
        row = result["metrics"].get(name)
        if row and row["mean"] is not None:
            print(f"  {name:<14} {row['mean']:.4f} ± {row['std'] if row['std'] is not None else float('nan'):.4f}")
    pooled = result.get("pooled")
    if pooled:
        low, high = pooled["accuracy_ci"]
        print(f"  pooled over {pooled['n']} test images: accuracy {pooled['accuracy']:.4f} (95% CI {low:.4f}–{high:.4f}), "
              f"ECE {pooled['ece']:.4f}")
    print(f"report: {result['report']}")
