"""The ``braintumor`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from braintumor import __version__
from braintumor.errors import BrainTumorError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder (<class>/<image> or Training|Testing/<class>/<image>); "
                   "default: $BRAINTUMOR_DATA, else ../shared/data/sartaj")
    p.add_argument("--class-map", help="extra folder-to-class names, e.g. 'tumor_g=glioma,healthy=no_tumor'")


def _config_kwargs(args) -> dict:
    """The `TrainConfig` fields that `train` or `compare` was given (those left out keep their
    defaults, or a resumed run's own values)."""
    from braintumor.data.classes import parse_class_map
    from braintumor.training.trainer import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kwargs = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.data:
        kwargs["data"] = str(args.data)
    if args.class_map:
        kwargs["class_map"] = parse_class_map(args.class_map)
    if args.exclude_file:
        from braintumor.data.dataset import read_path_list

        kwargs["exclude"] = read_path_list(args.exclude_file)
    if args.relabel_file:
        from braintumor.data.dataset import read_relabel_list

        kwargs["relabel"] = read_relabel_list(args.relabel_file)
    kwargs["progress"] = not args.quiet
    return kwargs


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The options of a training configuration, shared by `train` and `compare`."""
    p.add_argument("--train-seed", type=int, help="seed of the initialisation, augmentation and data order only, the split staying that of --seed: runs that differ in it alone are a deep ensemble of one split, e.g. teachers for --teacher (default: --seed)")
    p.add_argument("--backbone", help="timm model name (default: tf_efficientnet_lite0)")
    p.add_argument("--weights", help="ImageNet weights file (.safetensors or state dict) for the backbone")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None, help="start from random weights")
    p.add_argument("--image-size", type=int, help="network input side in pixels (default: 160)")
    p.add_argument("--low-res-scale", type=float, help="progressive resizing: the first --low-res-fraction of the epochs train on images scaled by this (default: 0.8, i.e. 128 px for 160; 1: off)")
    p.add_argument("--low-res-fraction", type=float, help="share of the epochs, from the first, trained at --low-res-scale (default: 0.3; 0: off)")
    p.add_argument("--no-crop", dest="crop_foreground", action="store_false", default=None, help="do not crop images to the head's bounding box")
    p.add_argument("--equalize", action="store_true", default=None, help="equalise each image's intensity histogram over the head's pixels, in training and wherever the model is used (default: off)")
    p.add_argument("--freeze-blocks", type=int, help="freeze the stem and this many early stages of the backbone (default: 0)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 20)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (default: 32)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default: 5e-4)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (default: 0; 0.1 costs calibration)")
    p.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay: each backbone block learns at this times the rate of the next, the head at --lr (default: 1, off)")
    p.add_argument("--ema-decay", type=float, help="validate and keep an exponential moving average of the weights with this decay, e.g. 0.998 (default: 0, off)")
    p.add_argument("--drop-rate", type=float, help="dropout before the dense layer (default: 0.5)")
    p.add_argument("--drop-path-rate", type=float, help="stochastic depth: skip residual blocks at random while training, the deepest with this probability, e.g. 0.2 (default: 0, off)")
    p.add_argument("--mixup-alpha", type=float, help="mixup: train on blends of image pairs and of their labels, blend weight ~ Beta(a, a), e.g. 0.2 (default: 0, off)")
    p.add_argument("--erase-prob", type=float, help="random erasing: share of training images that get one random rectangle overwritten by noise, e.g. 0.5 (default: 0, off)")
    p.add_argument("--contrast-prob", type=float, help="contrast remapping: share of training images whose intensities pass through a random monotone curve, half of them with the head inverted (T1-like to T2-like), e.g. 0.5 (default: 0, off)")
    p.add_argument("--degrade-prob", type=float, help="degradation: share of training images blurred by a random loss of resolution (shrunk to 35-85%% of their side and enlarged back) plus Gaussian noise, e.g. 0.5 (default: 0, off)")
    p.add_argument("--balance-sources", type=float, metavar="A", help="draw each epoch's images with weight n^-A, n the training images of the same top-level folder (Training/, Testing/): 1 shows every source equally often (default: 0, off)")
    p.add_argument("--sample-groups", action="store_true", default=None, help="each epoch, train on one randomly drawn image of every near-duplicate group instead of every image (copies count once; shorter epochs)")
    p.add_argument("--probe-head", action="store_true", default=None, help="linear probing first (LP-FT): fit the head by logistic regression on the frozen ImageNet features before fine-tuning (default: off)")
    p.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement (default: 8)")
    p.add_argument("--val-fraction", type=float, help="share of the training part used for validation (default: 0.1)")
    p.add_argument("--test-fraction", type=float, help="share held out for testing under 'original' (default: 0.1)")
    p.add_argument("--train-fraction", type=float, help="train on this stratified share of the training part only, duplicate groups kept whole; validation and test as for the full split (learning curves; default: 1)")
    p.add_argument("--exclude", dest="exclude_file", metavar="FILE", help="leave the images FILE lists out of training and validation (the test split stays as without them): the 'path' column of a CSV, such as label-issues' label_issues.csv, or one path per line, relative to --data (absolute paths under it are stored relative, so the run moves with the data)")
    p.add_argument("--relabel", dest="relabel_file", metavar="FILE", help="train and validate on the corrected labels FILE gives: a CSV with 'path' and 'corrected' columns, such as label-issues' label_issues.csv with 'corrected' filled in after review (rows left empty keep their label); paths relative to --data; the split is drawn and the test part scored with the folders' labels")
    p.add_argument("--teacher", nargs="+", metavar="RUN", help="knowledge distillation: also match the mean softened predictions of these finished runs (or checkpoints) of the same split, e.g. an ensemble distilled into one model (default: none)")
    p.add_argument("--distill-weight", type=float, help="with --teacher: weight of the teachers' term in the loss, the labels' cross-entropy getting the rest (default: 0.5)")
    p.add_argument("--distill-temperature", type=float, help="with --teacher: softmax temperature of the teachers' and the student's distributions in that term (default: 2)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", default=None, help="train in float32 instead of bfloat16 autocast")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None, help="no test-time augmentation (averaging each image with its rotated mirror)")
    p.add_argument("--tta-angle", type=float, help="test-time view: the mirror rotated by this many degrees (default: 8; 0: plain mirror)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--time-limit-min", type=float, help="wall-clock budget of the run in minutes, decoding included: an epoch starts only if it and the fits after training are projected to end within it; a --resume gets a new budget (default: 14; 0: no limit)")


def _cmd_train(args) -> int:
    from braintumor.data.dataset import default_data_dir
    from braintumor.evaluation.evaluator import evaluate
    from braintumor.training.trainer import TrainConfig, stored_config, train

    names = {f.name for f in fields(TrainConfig)}
    kwargs = _config_kwargs(args)
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

        _print_crossval(cross_validate(TrainConfig(**kwargs)), args.json)
        return 0
    out = train(TrainConfig(**kwargs))
    if not args.test:
        _print_validation(out, args.json)
        return 0
    metrics = evaluate(out / "model.safetensors", kwargs["data"], progress=not args.quiet)
    _print_metrics(metrics, args.json)
    return 0


def _print_validation(out: Path, as_json: bool) -> None:
    """What a run trained with --no-test shows: validation figures only, and how to test later."""
    from braintumor.model.checkpoint import read_info

    info, _ = read_info(out / "model.safetensors")
    shown = {k: info.metrics[k] for k in ("val_acc", "val_loss", "best_epoch", "val_acc_final", "train_minutes") if k in info.metrics}
    shown = {**shown, "temperature": info.temperature, "model": str(out / "model.safetensors"), "test": "not evaluated"}
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    print(f"validation accuracy {100 * shown['val_acc']:.2f}% at epoch {shown['best_epoch']}"
          + (f", {100 * shown['val_acc_final']:.2f}% with the test-time view" if "val_acc_final" in shown else ""))
    print(f"test split not evaluated; once the recipe is chosen: braintumor evaluate {out / 'model.safetensors'}")


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    print(f"test accuracy {100 * metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['n']}), "
          f"macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")
    print(f"report: {metrics['report']}")


def _cmd_evaluate(args) -> int:
    from braintumor.evaluation.evaluator import evaluate

    if args.model == "default" and not Path(args.model).exists():
        from braintumor.inference.predictor import DEFAULT_MODEL

        args.model = str(DEFAULT_MODEL)
    if args.external:
        return _evaluate_external(args)
    if args.train_data or not args.copy_check or args.class_map:
        raise BrainTumorError("--train-data, --no-copy-check and --class-map go with --external",
                              "add --external DIR, or drop them (a protocol's test split keeps the model's own class names)")
    metrics = evaluate(args.model, args.data, args.protocol, args.seed, args.out, progress=not args.quiet, against=args.against,
                       members=args.members or ())
    _print_metrics(metrics, args.json)
    if metrics.get("against") and not args.json:
        a = metrics["against"]
        low, high = a["difference_ci"]
        print(f"against {a['model']}: {100 * a['accuracy']:.2f}% ({a['correct']}/{metrics['n']}); difference "
              f"{100 * a['difference']:+.2f} points (95% CI {100 * low:+.2f} to {100 * high:+.2f})")
    return 0


def _evaluate_external(args) -> int:
    from braintumor.data.classes import parse_class_map
    from braintumor.evaluation.external import check_external_args, evaluate_external

    check_external_args(args.protocol, args.seed, args.against)
    if args.out is None:
        raise BrainTumorError("--external needs --out: the checkpoint's folder holds the report of its own test split",
                              "pass --out, e.g. --out runs/external")
    if (Path(args.out) / "model.safetensors").exists():
        raise BrainTumorError(f"{args.out} holds a training run, whose report.md is the run's own",
                              "pass another --out for the external report, e.g. --out runs/external")
    metrics = evaluate_external(args.model, args.external, args.out, args.train_data, args.members or (),
                                check_copies=args.copy_check, class_map=parse_class_map(args.class_map),
                                progress=not args.quiet)
    _print_metrics(metrics, args.json)
    if not args.json and "training_copies" in metrics:
        c, u = metrics["training_copies"], metrics.get("unseen")
        print(f"{c['with_a_copy']} of {c['images']} images have a copy among the model's training images"
              + (f"; on the other {u['n']}: accuracy {100 * u['accuracy']:.2f}% ({u['correct']}/{u['n']}), "
                 f"macro-F1 {u['macro_f1']:.4f}" if u else "; none is new to the model"))
    return 0


def _cmd_predict(args) -> int:
    from braintumor.inference.predictor import Predictor, expand_inputs, no_detector_note, write_csv

    if args.json and args.csv == "-":
        raise BrainTumorError("--json and --csv - would both write to stdout", "write the CSV to a file: --csv results.csv")
    files, problems = expand_inputs(args.inputs)
    if not files:
        raise BrainTumorError(
            "nothing to predict: " + "; ".join(f"{p.path}: {p.error}" for p in problems),
            "pass image files (JPEG, PNG, BMP, TIFF, DICOM) or folders that contain them",
        )
    predictor = Predictor(args.model, threads=args.threads, runtime=args.runtime, tta=args.tta, progress=not args.quiet)
    if no_detector_note(predictor):
        print(no_detector_note(predictor), file=sys.stderr)
    results = predictor.predict(args.inputs, batch_size=args.batch_size, progress=not args.quiet, frame=args.frame)
    failed = [r for r in results if r.error]
    if args.csv:
        write_csv(results, predictor.classes, sys.stdout if args.csv == "-" else args.csv)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif args.csv != "-":
        classes = predictor.classes
        names = [r.path + (f" [frame {r.frame}]" if r.frame else "") for r in results]
        width = max([len(n) for n in names] + [4])
        print(f"{'file':<{width}}  {'class':<13}  " + "  ".join(f"{c:>10}" for c in classes) + "  out-of-distribution")
        for name, r in zip(names, results):
            if r.error:
                print(f"{name:<{width}}  error: {r.error}")
                continue
            ood = "" if r.accepted is None else f"{r.ood_score:8.1f} {'accepted' if r.accepted else 'REJECTED'}"
            print(f"{name:<{width}}  {r.label:<13}  " + "  ".join(f"{r.probabilities[c]:>10.4f}" for c in classes) + f"  {ood}")
    if failed:
        print(f"{len(failed)} of {len(results)} inputs could not be predicted (see the errors above)", file=sys.stderr)
    if len(failed) == len(results):
        return 3
    return 0


def _cmd_explain(args) -> int:
    from braintumor.inference.explain import explain_files
    from braintumor.inference.predictor import Predictor, expand_inputs

    files, problems = expand_inputs(args.inputs)
    if not files:
        raise BrainTumorError("nothing to explain: " + "; ".join(f"{p.path}: {p.error}" for p in problems),
                              "pass image files (JPEG, PNG, BMP, TIFF, DICOM) or folders that contain them")
    predictor = Predictor(args.model, threads=args.threads, runtime="torch")  # Grad-CAM needs the torch model
    rows = explain_files(predictor, args.inputs, args.out, args.frame, args.target, progress=not args.quiet)
    if args.json:
        print(json.dumps(rows, indent=2))
    for row in rows if not args.json else []:
        if "error" in row:
            print(f"{row['path']}: error: {row['error']}")
        else:
            flag = "  (NOT A BRAIN MRI?)" if row["accepted"] is False else ""
            print(f"{row['png']}: {row['label']} {100 * row['probability']:.1f}%{flag}")
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} inputs could not be explained", file=sys.stderr)
    return 3 if failed == len(rows) else 0


def _cmd_export(args) -> int:
    from braintumor.inference.export import export_onnx
    from braintumor.inference.quantize import quantize_checkpoint

    if not args.int8:
        if args.data or args.calibration is not None:
            raise BrainTumorError("--data and --calibration only apply with --int8", "add --int8, or leave them out")
        out = export_onnx(args.model, args.out, tta=args.tta, members=args.members or ())
        print(json.dumps({"out": str(out)}) if args.json else f"wrote {out}")
        return 0
    if args.members:
        raise BrainTumorError("--int8 exports one model, not an ensemble", "leave out --with, or --int8")
    kwargs = {} if args.calibration is None else {"calibration": args.calibration}
    out, report = quantize_checkpoint(args.model, args.out, args.data, args.tta, progress=not args.quiet, **kwargs)
    if args.json:
        print(json.dumps({"out": str(out), **report}, indent=2))
        return 0
    f32, i8 = report["float32"], report["int8"]
    print(f"validation images ({report['images']}): accuracy {100 * f32['accuracy']:.2f}% float32, "
          f"{100 * i8['accuracy']:.2f}% int8; same class for {100 * report['same_class']:.1f}%; "
          f"largest probability difference {report['max_probability_difference']:.3f}")
    print(f"wrote {out}")
    return 0


def _cmd_fit_ood(args) -> int:
    from braintumor.inference.ood import DEFAULT_ACCEPT, fit_checkpoint

    accept = DEFAULT_ACCEPT if args.accept is None else args.accept
    meta = fit_checkpoint(args.model, args.data, args.out, accept, progress=not args.quiet)
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(f"out-of-distribution threshold {meta['threshold']:.2f}: accepts {100 * meta['val_accepted']:.1f}% "
              f"of validation images; saved in {args.out or args.model}")
    return 0


def _cmd_data_info(args) -> int:
    from braintumor.data.classes import parse_class_map
    from braintumor.data.dataset import default_data_dir, scan

    dataset = scan(args.data or default_data_dir(), parse_class_map(args.class_map))
    info = {
        "root": str(dataset.root),
        "images": len(dataset),
        "counts": dataset.counts(),
        "fingerprint": dataset.fingerprint(),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['root']}: {info['images']} images (fingerprint {info['fingerprint'][:16]})")
    for split, row in info["counts"].items():
        print(f"  {split:<9} " + "  ".join(f"{c} {n}" for c, n in row.items()))
    for item in info["skipped"]:
        print(f"  skipped {item['path']}: {item['reason']}")
    return 0


def _cmd_data_fetch(args) -> int:
    from braintumor.data.fetch import SARTAJ_URL, fetch

    dest = fetch(Path(args.dest), args.url or SARTAJ_URL, args.sha256, Path(args.archive) if args.archive else None, not args.quiet)
    print(f"dataset ready in {dest}")
    return 0


def _print_crossval(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
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


def _cmd_audit(args) -> int:
    from braintumor.audit.auditor import audit
    from braintumor.data.classes import parse_class_map
    from braintumor.data.duplicates import DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    result = audit(args.data, threshold, args.out, parse_class_map(args.class_map), progress=not args.quiet,
                   against=args.against)
    if args.json:
        if "against" in result:
            result["against"] = {k: v for k, v in result["against"].items() if k != "copies"}
        print(json.dumps({k: v for k, v in result.items() if k != "groups"}, indent=2))
        return 0
    print(f"{result['images']} images, {result['readable']} readable; near-duplicate threshold {result['threshold']} bits")
    names = {"byte": "byte-identical", "pixel": "pixel-identical", "near": "near-duplicate"}
    for key, name in names.items():
        level = result["levels"][key]
        across = sum(n for k, n in level["per_split"].items() if "+" in k)
        print(f"  {name:<16} {level['groups']:>5} groups, {level['files']:>5} images, {across:>4} groups across splits, "
              f"{level['label_conflicts']} label conflicts")
    shortcut = result["shortcut"]
    if "accuracy" in shortcut:
        print(f"  image size and compression alone predict the class of {shortcut['accuracy']:.1%} of the images "
              f"(largest class: {shortcut['majority']:.1%})")
    if "against" in result:
        a = result["against"]
        print(f"  {a['with_a_copy']} of the {a['readable']} readable images of {a['root']} have a copy here "
              f"({a['per_level']['byte']} byte, {a['per_level']['pixel']} pixel, {a['per_level']['near']} near; "
              f"{a['label_conflicts']} under another class)")
    print(f"report: {result['report']}")
    return 0


def _cmd_label_issues(args) -> int:
    from braintumor.evaluation.label_issues import label_issues

    result = label_issues(args.runs, args.data, args.out, progress=not args.quiet, sheet=args.sheet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{result['n']} images scored out-of-sample, accuracy {result['accuracy']:.2%} against the given labels")
    ci = result.get("estimated_label_errors_ci")
    print(f"estimated wrong labels: {result['estimated_label_errors']:.0f} ({result['estimated_error_rate']:.1%}"
          + (f", 95% CI {ci[0]:.0f}-{ci[1]:.0f}" if ci else "") + "); "
          f"flagged for review: {len(result['issues'])}, {result['errors_flagged']} of the model's {result['model_errors']} errors")
    for row in result["issues"][:10]:
        print(f"  {row['rank']:>3}. {row['path']}: {row['label']} -> {row['suggested']} ({row['p_suggested']:.2f})")
    print(f"report: {result['report']}")
    return 0


def _cmd_compare(args) -> int:
    from braintumor.evaluation.compare import DEFAULT_PROTOCOLS, compare
    from braintumor.data.dataset import default_data_dir
    from braintumor.training.trainer import TrainConfig

    protocols = tuple(args.protocols or DEFAULT_PROTOCOLS)
    kwargs = _config_kwargs(args)
    if args.resume:  # the runs keep the settings they started with, except those given again
        from braintumor.training.trainer import stored_config

        names = {f.name for f in fields(TrainConfig)} - {"protocol", "out", "folds", "fold", "overwrite"}
        stored = next(filter(None, (stored_config(Path(args.out) / p) for p in protocols)), None) or {}
        kwargs = {**{k: v for k, v in stored.items() if k in names}, **kwargs}
    kwargs.setdefault("data", str(default_data_dir()))
    result = compare(TrainConfig(**kwargs), protocols)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for row in result["rows"]:
        if "skipped" in row:
            print(f"  {row['protocol']:<9} skipped: {row['skipped']}")
        else:
            lo, hi = row["accuracy_ci"]
            print(f"  {row['protocol']:<9} accuracy {100 * row['accuracy']:.2f}% (95% CI {100 * lo:.2f}–{100 * hi:.2f}), "
                  f"{row['leaked_test_images']} of {row['n']} test images have a copy in train/val")
    print(f"report: {result['report']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braintumor", description="Classify brain MRI slices: glioma, meningioma, pituitary tumor or no tumor."
    )
    parser.add_argument("--version", action="version", version=f"braintumor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return p

    p = command("train", "train a model, then evaluate it on the held-out test split and write a report")
    _add_data_args(p)
    p.add_argument("--out", default="runs/latest", help="run directory for checkpoints, metrics and report (default: runs/latest)")
    p.add_argument("--protocol", choices=["original", "official", "dedup"], help="original: pooled data, random 10%% test split; official: Training vs Testing folders; dedup: original with near-duplicate groups kept on one side (default: original)")
    p.add_argument("--seed", type=int, help="seed of the split, and of the initialisation and augmentation unless --train-seed is given (default: 0)")
    _add_recipe_args(p)
    p.add_argument("--folds", type=int, help="cross-validate: train and test on K group-aware folds, report mean ± std of every metric")
    p.add_argument("--resume", action="store_true", default=None, help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start over in an --out that holds a run, deleting its checkpoints and report (without it, that is refused)")
    p.add_argument("--no-test", dest="test", action="store_false", help="do not evaluate the test split after training: print validation figures only, for choosing a recipe without looking at the test images (evaluate it later with 'braintumor evaluate')")
    p.add_argument("--json", action="store_true", help="print the test metrics (with --no-test: the validation figures) as JSON")
    p.set_defaults(func=_cmd_train)

    p = command("evaluate", "evaluate a checkpoint on a protocol's test split (or, with --external, on every image of "
                            "another labelled folder) and write a report")
    p.add_argument("model", help="checkpoint (.safetensors) written by `braintumor train`; 'default' for the model "
                                 "shipped with the package")
    p.add_argument("--data", help="dataset folder (default: the one the model was trained on)")
    p.add_argument("--protocol", choices=["original", "official", "dedup"], help="default: the model's training protocol")
    p.add_argument("--seed", type=int, help="split seed (default: the model's)")
    p.add_argument("--out", help="report folder (default: the checkpoint's folder)")
    p.add_argument("--against", metavar="MODEL2",
                   help="also score this checkpoint on the same test images and report the accuracy difference "
                        "with a paired 95%% interval (is MODEL really better than MODEL2?)")
    p.add_argument("--with", dest="members", nargs="+", action="extend", metavar="MODEL",
                   help="score MODEL and these checkpoints as one ensemble (their calibrated probabilities averaged) on MODEL's "
                        "test split; each must have held those images out (same --protocol and --seed, e.g. other --train-seed "
                        "runs), and --out is needed. With --against MODEL: the ensemble's gain over one model, paired")
    p.add_argument("--external", metavar="DIR",
                   help="score every image of DIR, a labelled dataset the model was not trained on (<class>/<image>), "
                        "and check it for copies of the model's training and validation images: the report gives the "
                        "figures on all images and on those without a copy, and lists the copies in "
                        "training_copies.csv; needs --out")
    p.add_argument("--train-data", metavar="DIR",
                   help="with --external: where the model's training dataset is now (default: the folder it records)")
    p.add_argument("--no-copy-check", dest="copy_check", action="store_false",
                   help="with --external: skip the check for copies of training images (when the training data is not at hand)")
    p.add_argument("--class-map", help="with --external: the folder's class names that are not known spellings, "
                                       "e.g. 'Tumor_G=glioma,healthy_brain=no_tumor'")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_evaluate)

    p = command("predict", "classify image files or folders of images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders (searched recursively)")
    p.add_argument("--model", action="append", help="checkpoint (.safetensors or exported .onnx); default: the model shipped with braintumor. "
                   "Given several times, an ensemble: the models' calibrated probabilities are averaged (more accurate, one pass per model; "
                   "the out-of-distribution score is then the mean of each model's score over its threshold, rejected above 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write results as CSV to FILE ('-' for stdout instead of the table)")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                   help="run the network in PyTorch or onnxruntime; auto: onnxruntime if installed (an .onnx --model always uses onnx)")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None, help="skip test-time augmentation, the rotated-mirror view (2x faster)")
    p.add_argument("--frame", type=int, help="only this frame (from 1) of multi-frame DICOM files (default: every frame)")
    p.set_defaults(func=_cmd_predict)

    p = command("explain", "write Grad-CAM explanations (PNG) of image files or folders")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders (searched recursively)")
    p.add_argument("--model", action="append", help="checkpoint (.safetensors); default: the model shipped with braintumor. "
                   "Given several times, an ensemble: its class (as predict --model ... gives it) and the mean of the models' heatmaps")
    p.add_argument("--out", default="explanations", help="folder for the PNGs (default: explanations)")
    p.add_argument("--target", help="explain this class instead of the predicted one")
    p.add_argument("--frame", type=int, help="only this frame (from 1) of multi-frame DICOM files (default: every frame)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_explain)

    p = command("export", "export a checkpoint for onnxruntime (dynamic batch size)")
    p.add_argument("model", help="checkpoint (.safetensors)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--out", help="file to write (default: the checkpoint's path with .onnx)")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None,
                   help="leave test-time augmentation (the rotated-mirror view) out of the graph (2x faster)")
    p.add_argument("--with", dest="members", nargs="+", action="extend", metavar="MODEL",
                   help="export MODEL and these checkpoints as one ensemble graph (what predict --model A --model B ... "
                        "computes: the calibrated probabilities averaged, one network pass per model)")
    p.add_argument("--int8", action="store_true",
                   help="quantize the convolutions to 8-bit integers (faster on CPUs; calibrated on the checkpoint's "
                        "training images and checked on its validation images, so it needs the dataset; "
                        "default --out: MODEL-int8.onnx)")
    p.add_argument("--data", help="with --int8: the dataset the model was trained on, if it moved since training")
    p.add_argument("--calibration", type=int,
                   help="with --int8: training images that set the int8 ranges (default: 200)")
    p.add_argument("--json", action="store_true", help="print the written file (with --int8: and the validation figures) as JSON")
    p.set_defaults(func=_cmd_export)

    p = command("fit-ood", "fit the 'not a brain MRI' detector of a checkpoint on its training/validation split")
    p.add_argument("model", help="checkpoint (.safetensors): its run's split.json, else the split re-created from its config")
    p.add_argument("--data", help="dataset folder, if it moved since training")
    p.add_argument("--accept", type=float, help="share of validation images to accept (default: 0.99)")
    p.add_argument("--out", help="write the updated checkpoint here (default: overwrite MODEL)")
    p.add_argument("--json", action="store_true", help="print the fitted statistics as JSON")
    p.set_defaults(func=_cmd_fit_ood)

    data = sub.add_parser("data", help="inspect or download datasets", description="inspect or download datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("info", help="count images per split and class, list unusable files")
    _add_data_args(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_data_info)
    p = data_sub.add_parser("fetch", help="download and unpack the public Sartaj dataset (needs internet)")
    p.add_argument("--dest", default="data/sartaj", help="folder to create (default: data/sartaj)")
    p.add_argument("--url", help="archive URL (default: the dataset's public GitHub archive)")
    p.add_argument("--sha256", help="expected SHA-256 of the archive; the download is rejected if it differs")
    p.add_argument("--archive", help="use this already downloaded zip instead of downloading")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_fetch)

    p = command("audit", "find exact and near-duplicate images, label conflicts, and whether image size and compression alone reveal the class; write a report")
    p.add_argument("data", metavar="DATA", help="dataset folder (<class>/<image> or Training|Testing/<class>/<image>)")
    p.add_argument("--threshold", type=int, default=None, help="near-duplicate Hamming threshold in bits, 0..24 (default: 8)")
    p.add_argument("--out", default="audit", help="report folder for audit.md, audit.json, contact_sheet.png (default: audit)")
    p.add_argument("--class-map", help="extra folder-to-class names, e.g. 'tumor_g=glioma,healthy=no_tumor'")
    p.add_argument("--against", metavar="OTHER",
                   help="also check OTHER, another labelled folder such as an external test set, for copies of DATA's "
                        "images (a model trained on DATA has seen them): counts, against.csv and against_sheet.png")
    p.add_argument("--json", action="store_true", help="print the audit as JSON (without the lists of groups and copies, "
                                                       "which audit.json in --out holds)")
    p.set_defaults(func=_cmd_audit)

    p = command("label-issues", "find images whose label is likely wrong, from the out-of-sample predictions of runs or a cross-validation; write a report")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder (its test split is scored) or cross-validation folder (every fold's test split: every image once)")
    p.add_argument("--data", help="dataset folder, if it moved since training")
    p.add_argument("--out", help="report folder (default: RUN/label_issues)")
    p.add_argument("--sheet", type=int, default=48, help="flagged images shown in label_issues.png (default: 48)")
    p.add_argument("--json", action="store_true", help="print the result, every flagged image included, as JSON")
    p.set_defaults(func=_cmd_label_issues)

    p = command("compare", "train and evaluate one configuration under original, dedup and official; write a table")
    _add_data_args(p)
    p.add_argument("--out", default="runs/compare", help="folder for one run per protocol and comparison.md (default: runs/compare)")
    p.add_argument("--protocols", nargs="+", choices=["original", "dedup", "official"], help="default: all three")
    p.add_argument("--seed", type=int, help="seed of the splits, and of the initialisation and augmentation unless --train-seed is given (default: 0)")
    _add_recipe_args(p)
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue in --out: finished runs are kept, an interrupted one resumes from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start over in an --out that holds runs, deleting their checkpoints and reports (without it, that is refused)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=_cmd_compare)

    from braintumor.fundamentals.cli import register as register_lessons

    register_lessons(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrainTumorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; a training run resumes from its last checkpoint with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
