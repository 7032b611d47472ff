"""The int8 graph (`braintumor export --int8`, `braintumor.inference.quantize`) against the float graph.

For each checkpoint (run directories written by ``braintumor train``, or ``--model`` files) it
writes the int8 graph to a temporary folder and reports:

- on the checkpoint's validation images (never the test split): accuracy, NLL and ECE of both
  graphs, the share of images given the same class, the largest probability difference;
- the out-of-distribution check: the float threshold and the int8 graph's own, the share of the
  validation images each graph accepts at its threshold, the share of `oodset`
  (photographs, noise, text, other kinds of scan: not brain MRI) each rejects, and each graph's
  AUROC between the validation images and that set;
- speed: onnxruntime's time per preprocessed image in batches of 8, the two graphs timed in
  alternating rounds in one process (median of ``--rounds``), for the first checkpoint only.

Usage: python benchmarks/int8_validation.py [RUN_DIR ...] [--model PATH ...] [--data DIR] [--rounds 7]
       [--threads 2] [--output NAME]
Writes benchmarks/results/int8_validation.json (or NAME).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # oodset.py, the non-MRI images
from _common import data_option, machine, write  # noqa: E402

from braintumor.model.checkpoint import load_checkpoint  # noqa: E402
from braintumor.inference.export import onnx_bytes  # noqa: E402
from braintumor.inference.runtime import OnnxRuntime  # noqa: E402
from braintumor.inference.ood import auroc  # noqa: E402
from oodset import ood_images  # noqa: E402
from braintumor.data.protocols import load_run  # noqa: E402
from braintumor.inference.quantize import quantize_checkpoint  # noqa: E402


def ms_per_image(runtimes: dict, images: np.ndarray, rounds: int) -> dict:
    times = {name: [] for name in runtimes}
    for runtime in runtimes.values():
        runtime.run(images[:16], batch_size=8)  # warm-up
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.run(images, batch_size=8)
            times[name].append(1000 * (time.perf_counter() - start) / len(images))
    return {"ms_per_image": {name: round(statistics.median(t), 2) for name, t in times.items()},
            "ms_per_image_each": {name: [round(x, 2) for x in t] for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories written by `braintumor train`")
    parser.add_argument("--model", action="append", default=[], help="a checkpoint file (repeatable), e.g. the shipped model")
    data_option(parser)
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (0: no timing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="int8_validation.json")
    args = parser.parse_args()
    checkpoints = [Path(r) / "model.safetensors" for r in args.runs] + [Path(m) for m in args.model]
    if not checkpoints:
        parser.error("give at least one run directory or --model")

    outside = ood_images(size=256)
    rows, pooled = [], {"images": 0, "float32": 0, "int8": 0, "same": 0}
    speed = None
    with tempfile.TemporaryDirectory() as tmp:
        for number, checkpoint in enumerate(checkpoints):
            out, report = quantize_checkpoint(checkpoint, Path(tmp) / f"m{number}.onnx", args.data, progress=False)
            model, info = load_checkpoint(checkpoint)
            graphs = {"float32": OnnxRuntime(onnx_bytes(model, info), args.threads), "int8": OnnxRuntime(out, args.threads)}
            ood = np.stack([info.preprocess(image) for _, image in outside])
            images, _, split = load_run(checkpoint, info, args.data)
            val = images[split.val]
            rejected, accepted, ood_auroc = {}, {}, {}
            for name, graph in graphs.items():
                if graph.threshold is not None:
                    outside_scores, val_scores = graph.run(ood)[1], graph.run(val)[1]
                    rejected[name] = round(float((outside_scores > graph.threshold).mean()), 4)
                    accepted[name] = round(float((val_scores <= graph.threshold).mean()), 4)
                    ood_auroc[name] = round(auroc(val_scores, outside_scores), 4)
            n = report["images"]
            pooled["images"] += n
            for key in ("float32", "int8"):
                pooled[key] += round(report[key]["accuracy"] * n)
            pooled["same"] += round(report["same_class"] * n)
            row = {"checkpoint": str(checkpoint), "protocol": info.train_config.get("protocol"),
                   "seed": info.train_config.get("seed"), "validation": report, "ood_thresholds": {name: g.threshold for name, g in graphs.items()},
                   "validation_accepted": accepted, "ood_set_rejected": rejected,
                   "ood_auroc_validation_against_ood_set": ood_auroc, "ood_set_images": len(ood)}
            if number == 0 and args.rounds:
                slices = images[:64]
                speed = {"checkpoint": str(checkpoint), "threads": args.threads, "batch_size": 8, "images": len(slices),
                         "tta": info.tta, **ms_per_image(graphs, slices, args.rounds)}
                speed["speedup"] = round(speed["ms_per_image"]["float32"] / speed["ms_per_image"]["int8"], 2)
                print("speed:", speed["ms_per_image"], speed["speedup"])
            rows.append(row)
            print(f"{checkpoint}: right of {n}: float32 {round(report['float32']['accuracy'] * n)}, "
                  f"int8 {round(report['int8']['accuracy'] * n)}; same class {report['same_class']:.4f}; "
                  f"OOD set rejected {rejected}, AUROC {ood_auroc}")
    payload = {"machine": machine(), "pooled_validation": pooled, "speed": speed, "checkpoints": rows}
    print(write(args.output, payload))


if __name__ == "__main__":
    main()
