"""``braintumor evaluate``: a model (or an ensemble) on a protocol's test split, or on every image
of another labelled collection (``--external``)."""

from __future__ import annotations

from pathlib import Path

from braintumor.cli.common import add_command, add_device, add_data, add_model, add_out, data_of, models_of, print_metrics
from braintumor.errors import BrainTumorError
from braintumor.options import PROTOCOLS, cli_type


def register(sub) -> None:
    p = add_command(sub, "evaluate", "evaluate a model on a protocol's test split (or, with --external, on every image "
                                     "of another labelled folder) and write a report", json_help="print the metrics as JSON")
    add_model(p, "The model to evaluate; several: their ensemble, scored on the first one's test split (each must "
                 "have held those images out: same --protocol and --seed, e.g. other --train-seed runs; needs --out).",
              positional=True)
    add_data(p, help="dataset folder (default: the one(s) the model was trained on)", class_map=False)
    p.add_argument("--protocol", choices=PROTOCOLS, help="default: the model's training protocol")
    p.add_argument("--seed", type=cli_type("seed"), help="split seed (default: the model's)")
    add_out(p, "report folder (default: the checkpoint's folder)")
    p.add_argument("--against", type=cli_type("against"), metavar="MODEL2",
                   help="also score this checkpoint on the same test images and report the accuracy difference "
                        "with a paired 95%% interval (is MODEL really better than MODEL2?)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="score a split whose test images the model trained or was validated on (another --seed or "
                        "--protocol than its own), which is refused otherwise; the report's first line then says so")
    p.add_argument("--external", type=cli_type("external"), metavar="DIR",
                   help="score every image of DIR, a labelled dataset the model was not trained on (<class>/<image>), "
                        "and check it for copies of the model's training and validation images: the report gives the "
                        "figures on all images and on those without a copy, and lists the copies in "
                        "training_copies.csv; needs --out")
    p.add_argument("--train-data", type=cli_type("train_data"), metavar="DIR",
                   help="with --external: where the model's training dataset is now (default: the folder it records)")
    p.add_argument("--no-copy-check", dest="copy_check", action="store_false",
                   help="with --external: skip the check for copies of training images (when the training data is not at hand)")
    p.add_argument("--class-map", type=cli_type("class_map"), help="with --external: the folder's class names that are not known spellings, "
                                                                "e.g. 'Tumor_G=glioma,healthy_brain=no_tumor'")
    add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.evaluation import evaluate

    model, *members = models_of(args)
    if args.external:
        return _external(args, model, members)
    if args.train_data or not args.copy_check or args.class_map:
        raise BrainTumorError("--train-data, --no-copy-check and --class-map go with --external",
                              "add --external DIR, or drop them (a protocol's test split keeps the model's own class names)")
    metrics = evaluate(model, data_of(args), args.protocol, args.seed, args.out, progress=not args.quiet, against=args.against,
                       members=members, allow_overlap=args.allow_overlap, device=args.device or "auto")
    if metrics.get("held_out") is False and not args.json:
        print(metrics["overlap_note"])
    print_metrics(metrics, args.json)
    if metrics.get("against") and not args.json:
        a = metrics["against"]
        low, high = a["difference_ci"]
        print(f"against {a['model']}: {100 * a['accuracy']:.2f}% ({a['correct']}/{metrics['n']}); difference "
              f"{100 * a['difference']:+.2f} points (95% CI {100 * low:+.2f} to {100 * high:+.2f})")
    return 0


def _external(args, model: str, members: list[str]) -> int:
    from braintumor.data.classes import parse_class_map
    from braintumor.evaluation.external import check_external_args, evaluate_external

    check_external_args(args.protocol, args.seed, args.against)
    if args.out is None:
        raise BrainTumorError("--external needs --out: the checkpoint's folder holds the report of its own test split",
                              "pass --out, e.g. --out runs/external")
    if (Path(args.out) / "model.safetensors").exists():
        raise BrainTumorError(f"{args.out} holds a training run, whose report.md is the run's own",
                              "pass another --out for the external report, e.g. --out runs/external")
    metrics = evaluate_external(model, args.external, args.out, args.train_data, members,
                                check_copies=args.copy_check, class_map=parse_class_map(args.class_map),
                                progress=not args.quiet)
    print_metrics(metrics, args.json)
    if not args.json and "training_copies" in metrics:
        c, u = metrics["training_copies"], metrics.get("unseen")
        print(f"{c['with_a_copy']} of {c['images']} images have a copy among the model's training images"
              + (f"; on the other {u['n']}: accuracy {100 * u['accuracy']:.2f}% ({u['correct']}/{u['n']}), "
                 f"macro-F1 {u['macro_f1']:.4f}" if u else "; none is new to the model"))
    return 0
