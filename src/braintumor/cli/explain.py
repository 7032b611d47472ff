"""``braintumor explain``: Grad-CAM heatmaps (PNG) of image files and folders."""

from __future__ import annotations

import json
import sys

from braintumor.cli.common import add_command, add_device, add_model, add_out, add_threads, add_volume_options, models_of
from braintumor.errors import BrainTumorError
from braintumor.options import cli_type


def register(sub) -> None:
    p = add_command(sub, "explain", "write Grad-CAM explanations (PNG) of image files or folders", json_help="print results as JSON")
    p.add_argument("inputs", nargs="+", type=cli_type("inputs"), metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders (searched recursively)")
    add_model(p, "Default: the model shipped with braintumor. An ensemble gives its class (as predict does) and the "
                 "mean of the models' heatmaps.")
    add_out(p, "folder for the PNGs (default: explanations)", default="explanations")
    p.add_argument("--target", type=cli_type("target"), help="explain this class instead of the predicted one")
    p.add_argument("--frame", type=cli_type("frame"),
                   help="only this frame (from 1) of multi-frame DICOM files, and this slice (from 1) of NIfTI volumes "
                        "(default: every frame, every slice with enough brain)")
    add_volume_options(p)
    add_threads(p)
    add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.inference.explain import explain_files
    from braintumor.inference.predictor import Predictor, expand_inputs

    files, problems = expand_inputs(args.inputs)
    if not files:
        raise BrainTumorError("nothing to explain: " + "; ".join(f"{p.path}: {p.error}" for p in problems),
                              "pass image files (JPEG, PNG, BMP, TIFF, DICOM), NIfTI volumes or folders that contain them")
    # Grad-CAM needs the torch model
    predictor = Predictor(models_of(args, required=False) or None, threads=args.threads, runtime="torch",
                          device=args.device or "auto")
    rows = explain_files(predictor, args.inputs, args.out, args.frame, args.target, progress=not args.quiet,
                         axis=args.axis, volume=args.volume)
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
