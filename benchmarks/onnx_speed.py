"""Prediction speed in onnxruntime on the CPU, JPEG decoding included, beside detect-tumor.

Measured in one run on the same files (the test split of the checkpoint's run, JPEG slices):

- folder: ``Predictor(model, runtime="onnx", threads=T).predict(files)``: decode in threads,
  preprocess, batches of 32 through onnxruntime; images per second, the median of
  ``--repeats`` passes (target >= 200);
- single image: one file → probabilities with the model already loaded, median of many calls
  (target <= 10 ms);
- detect-tumor (the VGG16 ONNX package, if installed): ``TumorDetector().predict(file)`` on the
  same files, single image; ratio of its median time to ours (goal >= 15x).

Both with the checkpoint's flip test-time augmentation (TTA, two network passes per image) and
without it. Run it on a quiet machine.

Usage: python benchmarks/onnx_speed.py [--model PATH] [--images DIR | --data DIR] [--threads 2] [--single 100] [--repeats 3]
Writes benchmarks/results/onnx_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_option, machine, median_ms, time_predictor, write  # noqa: E402

from braintumor.model.checkpoint import read_info  # noqa: E402
from braintumor.data.classes import canonical_class  # noqa: E402
from braintumor.errors import BrainTumorError  # noqa: E402
from braintumor.data.imageio import is_image_file  # noqa: E402
from braintumor.inference.ood import fit_checkpoint  # noqa: E402
from braintumor.inference.predictor import DEFAULT_MODEL, Predictor  # noqa: E402
from braintumor.data.protocols import load_run  # noqa: E402


def _files(model: Path, images: str | None, data: str) -> list[Path]:
    """The benchmark's images: a folder's, or the test split of the model's run (its run
    folder's ``split.json``, else the split re-created from its config on `data`)."""
    if images:
        return sorted(p for p in Path(images).rglob("*") if p.is_file() and is_image_file(p))
    saved = model.parent / "split.json"
    if saved.is_file():
        return [Path(p) for p in json.loads(saved.read_text())["test"]]
    _, found, split = load_run(model, read_info(model)[0], data)  # checks the data's fingerprint
    return [found.paths[i] for i in split.test]


def measure_ours(model: Path, files: list[Path], threads: int, tta: bool | None, single: int, repeats: int) -> dict:
    predictor = Predictor(model, threads=threads, runtime="onnx", tta=tta)
    predictor.predict(files[:64])  # warm-up: thread pools, onnxruntime's first runs
    timed = time_predictor(predictor, files, repeats, single)
    results = timed["results"]
    errors = [r for r in results if r.error]
    truth = [canonical_class(Path(r.path).parent.name) for r in results if not r.error]
    correct = sum(t == r.top_class for t, r in zip(truth, [r for r in results if not r.error]))
    return {
        "tta": predictor.runtime.tta,
        "folder_images": len(files),
        "folder_errors": len(errors),
        "folder_images_per_s": round(timed["images_per_s"], 1),
        "folder_passes_per_s": [round(r, 1) for r in timed["passes_per_s"]],
        "single_image_ms_median": round(timed["single_ms_median"], 2),
        "single_image_ms_p90": round(timed["single_ms_p90"], 2),
        "accuracy_by_folder_name": round(correct / max(1, len(truth)), 4),
        "accepted_share": round(sum(bool(r.accepted) for r in results) / max(1, len(results) - len(errors)), 4),
    }


def measure_detect_tumor(files: list[Path]) -> dict:
    try:
        from detect_tumor import TumorDetector
    except ImportError:
        return {"installed": False, "note": "pip install detect-tumor to measure it"}
    detector = TumorDetector()
    for f in files[:5]:
        detector.predict(f)  # warm-up (loads its bundled VGG16 ONNX model)
    median, p90 = median_ms(detector.predict, files)
    return {"installed": True, "single_image_ms_median": round(median, 2), "single_image_ms_p90": round(p90, 2),
            "images_per_s": round(1000 / median, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint (default: the shipped model)")
    parser.add_argument("--images", help="folder of slices (default: the test split of the model's run, re-created on --data)")
    data_option(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single", type=int, default=100, help="files for the single-image timings")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the folder; the median is reported")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = Path(args.model)
    try:
        files = _files(model, args.images, args.data)
    except BrainTumorError as error:
        raise SystemExit(f"error: {error}") from None
    work = tempfile.TemporaryDirectory()
    if read_info(model)[0].extra.get("ood") is None:  # a run trained before the detector existed
        fitted = Path(work.name) / "model.safetensors"
        fit_checkpoint(model, out=fitted, progress=False)
        model = fitted
    ours = {"checkpoint_tta": measure_ours(model, files, args.threads, None, args.single, args.repeats),
            "no_tta": measure_ours(model, files, args.threads, False, args.single, args.repeats)}
    theirs = measure_detect_tumor(files[: args.single])
    info, _ = read_info(model)
    payload = {
        "machine": machine(),
        "onnxruntime_threads": args.threads,
        "model": args.model,
        "ood_detector": "fitted for this run from the training/validation split" if str(model) != args.model else "stored",
        "image_size": info.preprocess.image_size,
        "images": args.images or "test split of the model's run",
        "ours": ours,
        "detect_tumor": theirs,
    }
    main_row = ours["checkpoint_tta"]
    if theirs.get("installed"):
        payload["speedup_single_image"] = {k: round(theirs["single_image_ms_median"] / v["single_image_ms_median"], 1)
                                           for k, v in ours.items()}
    payload["targets_met"] = {
        "folder_ge_200_per_s": {k: v["folder_images_per_s"] >= 200 for k, v in ours.items()},
        "single_le_10_ms": {k: v["single_image_ms_median"] <= 10 for k, v in ours.items()},
        "speedup_ge_15x": {k: v >= 15 for k, v in payload.get("speedup_single_image", {}).items()},
    }
    payload["headline"] = {"tta": main_row["tta"], "folder_images_per_s": main_row["folder_images_per_s"],
                           "single_image_ms_median": main_row["single_image_ms_median"]}
    print(write("onnx_speed.json", payload).read_text())


if __name__ == "__main__":
    main()
