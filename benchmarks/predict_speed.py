"""In-process prediction speed of a checkpoint, JPEG decoding included.

- batched: `Predictor.predict` over a folder's files, the median of ``--repeats`` passes
  (target >= 100 images/s);
- single image: one file → probabilities, model already loaded, median of many calls
  (target <= 30 ms).

The runtime is `Predictor`'s default (``auto``: onnxruntime when installed) unless
``--runtime torch|onnx`` is given; the first construction of an onnx predictor exports and
caches the graph, so it is timed apart (``load_s``) and not in the figures.

Usage: python benchmarks/predict_speed.py [--model PATH [PATH ...]] [--images DIR] [--n 320] [--runtime auto|torch|onnx] [--no-tta]
       [--output NAME]
Writes benchmarks/results/predict_speed[_torch][_no_tta].json (or NAME).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, time_predictor, write  # noqa: E402

from braintumor.data.dataset import default_data_dir  # noqa: E402
from braintumor.data.imageio import is_image_file  # noqa: E402
from braintumor.inference.predictor import Predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", help="checkpoint; default: the shipped model; several: their ensemble")
    parser.add_argument("--images", default=str(default_data_dir() / "Testing"),
                        help="folder of slices (default: the Testing folder of $BRAINTUMOR_DATA, else ../shared/data/sartaj)")
    parser.add_argument("--n", type=int, default=320, help="images for the batched measurement")
    parser.add_argument("--single", type=int, default=100, help="single-image calls to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="batched passes over the files; the median is reported")
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--no-tta", dest="tta", action="store_false", default=None, help="without flip averaging")
    parser.add_argument("--output", help="results file name in benchmarks/results/ (default: from --runtime and --no-tta)")
    args = parser.parse_args()

    files = sorted(p for p in Path(args.images).rglob("*") if is_image_file(p))[: args.n]
    Predictor(args.model, tta=args.tta, runtime=args.runtime)  # exports and caches the onnx graph, if any
    start = time.perf_counter()
    predictor = Predictor(args.model, tta=args.tta, runtime=args.runtime)
    load_s = time.perf_counter() - start
    predictor.predict(files[:8], batch_size=8)  # warm-up

    timed = time_predictor(predictor, files, args.repeats, args.single, args.batch_size)
    assert not any(r.error for r in timed["results"])
    batched, single_ms = timed["images_per_s"], timed["single_ms_median"]
    payload = {
        "machine": machine(),
        "model": str(predictor.path) if len(predictor.paths) == 1 else [str(p) for p in predictor.paths],
        "image_size": predictor.info.preprocess.image_size,
        "tta": predictor.info.tta if args.tta is None else args.tta,
        "runtime": predictor.runtime.name,
        "load_s": round(load_s, 2),
        "images": len(files),
        "batched_images_per_s": round(batched, 1),
        "batched_images_per_s_each": [round(r, 1) for r in timed["passes_per_s"]],
        "single_image_ms_median": round(single_ms, 2),
        "single_image_ms_p90": round(timed["single_ms_p90"], 2),
        "targets_met": {"batched_ge_100_per_s": batched >= 100, "single_le_30_ms": single_ms <= 30},
    }
    name = "predict_speed" + ("_torch" if args.runtime == "torch" else "") + ("_no_tta" if args.tta is False else "") + ".json"
    print(write(args.output or name, payload).read_text())


if __name__ == "__main__":
    main()
