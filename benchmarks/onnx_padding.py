"""What constant "same" padding buys the exported graph (`braintumor.inference.export.static_same_padding`).

Two ONNX graphs of one checkpoint, timed in the same process, alternately:

- ``computed``: timm's ``Conv2dSame`` as it is, padding computed from the input's size in the
  graph (what `onnx_bytes` exported before);
- ``constant``: what `onnx_bytes` exports now, the padding fixed for the graph's input size.

For each, with and without the checkpoint's test-time view: onnxruntime's time per image over
batches of 8 preprocessed images (the median of ``--rounds`` rounds, the rounds alternating
between the graphs so that the machine's drift hits both alike), the Pad nodes left after
onnxruntime's optimisation, and the largest difference between the two graphs' probabilities.

Usage: python benchmarks/onnx_padding.py [--model PATH] [--images DIR] [--rounds 7] [--threads 2]
Writes benchmarks/results/onnx_padding.json.
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
from _common import machine, write  # noqa: E402

import braintumor.inference.export as export  # noqa: E402
from braintumor.model.checkpoint import load_checkpoint  # noqa: E402
from braintumor.data.dataset import default_data_dir  # noqa: E402
from braintumor.data.imageio import is_image_file, read_image  # noqa: E402
from braintumor.inference.predictor import DEFAULT_MODEL  # noqa: E402
from braintumor.inference.runtime import OnnxRuntime  # noqa: E402


def pads_after_optimisation(data: bytes) -> int:
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return sum(node.op_type == "Pad" for node in onnx.load(options.optimized_model_filepath).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint (default: the shipped model)")
    parser.add_argument("--images", default=str(default_data_dir() / "Testing"), help="folder of slices")
    parser.add_argument("--n", type=int, default=64, help="images per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    model, info = load_checkpoint(args.model)
    files = sorted(p for p in Path(args.images).rglob("*") if is_image_file(p))[: args.n]
    images = np.stack([info.preprocess(read_image(f)) for f in files])
    keep = export.static_same_padding
    results = {}
    for tta in (True, False):
        graphs = {}
        try:
            export.static_same_padding = lambda net, size: net  # noqa: E731 - the graph as exported before
            graphs["computed"] = export.onnx_bytes(model, info, tta)
        finally:
            export.static_same_padding = keep
        graphs["constant"] = export.onnx_bytes(model, info, tta)
        runtimes = {name: OnnxRuntime(data, threads=args.threads) for name, data in graphs.items()}
        outputs = {name: runtime.run(images) for name, runtime in runtimes.items()}  # also the warm-up
        times = {name: [] for name in graphs}
        for _ in range(args.rounds):
            for name, runtime in runtimes.items():
                start = time.perf_counter()
                runtime.run(images, batch_size=8)
                times[name].append(1000 * (time.perf_counter() - start) / len(images))
        ms = {name: round(statistics.median(t), 2) for name, t in times.items()}
        results["tta" if tta else "no_tta"] = {
            "ms_per_image": ms,
            "ms_per_image_each": {name: [round(x, 2) for x in t] for name, t in times.items()},
            "speedup": round(ms["computed"] / ms["constant"], 2),
            "pad_nodes_after_optimisation": {name: pads_after_optimisation(data) for name, data in graphs.items()},
            "max_probability_difference": float(np.abs(outputs["computed"][0] - outputs["constant"][0]).max()),
            "max_ood_score_difference": float(np.abs(outputs["computed"][1] - outputs["constant"][1]).max()),
        }
        print(("with" if tta else "without"), "the test-time view:", results["tta" if tta else "no_tta"])
    payload = {"machine": machine(), "model": args.model, "image_size": info.preprocess.image_size,
               "onnxruntime_threads": args.threads, "batch_size": 8, "images": len(images), **results}
    print(write("onnx_padding.json", payload))


if __name__ == "__main__":
    main()
