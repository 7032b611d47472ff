"""``braintumor fit-ood``: fit a model's "not a brain MRI" detector on its own split."""

from __future__ import annotations

from braintumor.cli.common import add_command, add_data, add_model, add_out, data_of, models_of, print_json
from braintumor.errors import BrainTumorError
from braintumor.options import OOD_ACCEPT, OOD_VARIANTS, cli_type


def register(sub) -> None:
    p = add_command(sub, "fit-ood", "fit the 'not a brain MRI' detector of a checkpoint on its training/validation split",
                    json_help="print the fitted statistics as JSON")
    add_model(p, "The checkpoint (.safetensors): its run's split.json, else the split re-created from its config.",
              positional=True)
    add_data(p, help="dataset folder, if it moved since training", class_map=False)
    p.add_argument("--accept", type=cli_type("accept"), help=f"share of validation images to accept (default: {OOD_ACCEPT:g})")
    p.add_argument("--variants", type=cli_type("variants"),
                   help="intensity-remapped copies of each training image to fit on too, so that slices of MRI sequences "
                        f"the training data lacks (T2, FLAIR) are accepted; 0: the training images alone (default: {OOD_VARIANTS})")
    add_out(p, "write the updated checkpoint here (a new file; the input is left as it is)")
    p.add_argument("--in-place", action="store_true", help="update the input checkpoint itself instead of writing --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.inference.ood import DEFAULT_ACCEPT, DEFAULT_VARIANTS, fit_checkpoint

    models = models_of(args)
    if len(models) > 1:
        raise BrainTumorError("fit-ood fits one checkpoint at a time", "give one -m")
    if bool(args.out) == bool(args.in_place):
        raise BrainTumorError("say where the fitted checkpoint goes: --out NEW.safetensors, or --in-place to update the input"
                              if not args.out else "--out and --in-place contradict each other",
                              "fit-ood never overwrites its input unless --in-place is given")
    accept = DEFAULT_ACCEPT if args.accept is None else args.accept
    variants = DEFAULT_VARIANTS if args.variants is None else args.variants
    meta = fit_checkpoint(models[0], data_of(args), args.out, accept, progress=not args.quiet, variants=variants)
    if args.json:
        print_json(meta)
    else:
        print(f"out-of-distribution threshold {meta['threshold']:.2f}: accepts {100 * meta['val_accepted']:.1f}% "
              f"of validation images; saved in {args.out or models[0]}")
    return 0
