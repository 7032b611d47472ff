"""``braintumor export``: a model (or an ensemble) as one ONNX graph, optionally int8."""

from __future__ import annotations

from braintumor.cli.common import add_command, add_data, add_model, add_out, data_of, models_of, print_json
from braintumor.errors import BrainTumorError
from braintumor.options import cli_type


def register(sub) -> None:
    p = add_command(sub, "export", "export a model for onnxruntime (dynamic batch size)",
                    json_help="print the written file (with --int8: and the validation figures) as JSON")
    add_model(p, "The checkpoint to export; several: one ensemble graph (what predict -m A -m B computes: the "
                 "calibrated probabilities averaged, one network pass per model).", positional=True)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    add_out(p, "file to write (default: the checkpoint's path with .onnx; with --int8: MODEL-int8.onnx); "
               "an existing file is replaced")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None,
                   help="leave test-time augmentation (the rotated-mirror view) out of the graph (2x faster)")
    p.add_argument("--int8", action="store_true",
                   help="quantize the convolutions to 8-bit integers (faster on CPUs; calibrated on the checkpoint's "
                        "training images and checked on its validation images, so it needs the dataset)")
    add_data(p, help="with --int8: the dataset the model was trained on, if it moved since training", class_map=False)
    p.add_argument("--calibration", type=cli_type("calibration"), help="with --int8: training images that set the int8 ranges (default: 200)")
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.inference.export import export_onnx
    from braintumor.inference.quantize import quantize_checkpoint

    model, *members = models_of(args)
    if not args.int8:
        if args.data or args.calibration is not None:
            raise BrainTumorError("--data and --calibration only apply with --int8", "add --int8, or leave them out")
        out = export_onnx(model, args.out, tta=args.tta, members=members)
        print_json({"out": str(out)}) if args.json else print(f"wrote {out}")
        return 0
    if members:
        raise BrainTumorError("--int8 exports one model, not an ensemble", "give one -m, or leave out --int8")
    kwargs = {} if args.calibration is None else {"calibration": args.calibration}
    out, report = quantize_checkpoint(model, args.out, data_of(args), args.tta, progress=not args.quiet, **kwargs)
    if args.json:
        print_json({"out": str(out), **report})
        return 0
    f32, i8 = report["float32"], report["int8"]
    print(f"validation images ({report['images']}): accuracy {100 * f32['accuracy']:.2f}% float32, "
          f"{100 * i8['accuracy']:.2f}% int8; same class for {100 * report['same_class']:.1f}%; "
          f"largest probability difference {report['max_probability_difference']:.3f}")
    print(f"wrote {out}")
    return 0
