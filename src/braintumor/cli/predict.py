"""``braintumor predict``: classify image files and folders (a table, ``--json`` or ``--csv``)."""

from __future__ import annotations

import json
import sys

from braintumor.cli.common import add_command, add_device, add_model, add_threads, add_volume_options, models_of
from braintumor.errors import BrainTumorError
from braintumor.options import cli_type


def register(sub) -> None:
    p = add_command(sub, "predict", "classify image files or folders of images (NIfTI volumes slice by slice)",
                    json_help="print results as JSON (with NIfTI volumes: {\"predictions\": [...], \"volumes\": [...]})")
    p.add_argument("inputs", nargs="+", type=cli_type("inputs"), metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders (searched recursively; files of other types are listed as skipped)")
    add_model(p, "Default: the model shipped with braintumor. An ensemble's out-of-distribution score is the mean of "
                 "each model's score over its threshold, rejected above 1.")
    p.add_argument("--batch-size", type=cli_type("batch_size"), default=32, help="images per batch (default: 32)")
    add_threads(p)
    p.add_argument("--csv", type=cli_type("csv"), metavar="FILE", help="also write results as CSV to FILE ('-' for stdout instead of the table)")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto",
                   help="run the network in PyTorch or onnxruntime; auto: onnxruntime if installed (an .onnx model always uses onnx)")
    p.add_argument("--no-tta", dest="tta", action="store_false", default=None, help="skip test-time augmentation, the rotated-mirror view (2x faster)")
    p.add_argument("--frame", type=cli_type("frame"),
                   help="only this frame (from 1) of multi-frame DICOM files, and this slice (from 1) of NIfTI volumes "
                        "(default: every frame, every slice with enough brain)")
    add_volume_options(p)
    add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.inference.predictor import Predictor, expand_inputs, no_detector_note, write_csv
    from braintumor.inference.volume import summarise_volumes

    if args.json and args.csv == "-":
        raise BrainTumorError("--json and --csv - would both write to stdout", "write the CSV to a file: --csv results.csv")
    files, problems = expand_inputs(args.inputs)
    if not files:
        raise BrainTumorError(
            "nothing to predict: " + "; ".join(f"{p.path}: {p.error}" for p in problems),
            "pass image files (JPEG, PNG, BMP, TIFF, DICOM), NIfTI volumes or folders that contain them",
        )
    predictor = Predictor(models_of(args, required=False) or None, threads=args.threads, runtime=args.runtime,
                          tta=args.tta, progress=not args.quiet, device=args.device or "auto")
    if predictor.device_note:
        print(predictor.device_note, file=sys.stderr)
    if no_detector_note(predictor):
        print(no_detector_note(predictor), file=sys.stderr)
    results = predictor.predict(args.inputs, batch_size=args.batch_size, progress=not args.quiet, frame=args.frame,
                                axis=args.axis, volume=args.volume)
    volumes = summarise_volumes(results)
    failed = [r for r in results if r.error]
    if args.csv:
        write_csv(results, predictor.classes, sys.stdout if args.csv == "-" else args.csv)
    if args.json:
        rows = [r.to_dict() for r in results]
        print(json.dumps({"predictions": rows, "volumes": [v.to_dict() for v in volumes]} if volumes else rows, indent=2))
    elif args.csv != "-":
        _print_table(results, predictor.classes)
        _print_volumes(volumes)
    if failed:
        print(f"{len(failed)} of {len(results)} inputs could not be predicted (see the errors above)", file=sys.stderr)
    return 3 if len(failed) == len(results) else 0


def _print_volumes(volumes) -> None:
    """One line per NIfTI volume: its summary, flagged as slice-level evidence."""
    for v in volumes:
        print(f"volume {v.path}: {v.text}")


def _print_table(results, classes) -> None:
    names = [r.path + _frame_name(r) for r in results]
    width = max([len(n) for n in names] + [4])
    print(f"{'file':<{width}}  {'class':<13}  " + "  ".join(f"{c:>10}" for c in classes) + "  out-of-distribution")
    for name, r in zip(names, results):
        if r.error:
            print(f"{name:<{width}}  error: {r.error}")
            continue
        ood = "" if r.accepted is None else f"{r.ood_score:8.1f} {'accepted' if r.accepted else 'REJECTED'}"
        print(f"{name:<{width}}  {r.label:<13}  " + "  ".join(f"{r.probabilities[c]:>10.4f}" for c in classes) + f"  {ood}")


def _frame_name(result) -> str:
    """`` [frame N]`` for a DICOM frame, `` [slice N]`` for a slice of a NIfTI volume."""
    if result.frame is None:
        return ""
    return f" [{'slice' if result.axis is not None else 'frame'} {result.frame}]"
