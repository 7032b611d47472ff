"""Int8 export: an onnxruntime graph whose convolutions run in 8-bit integers.

EfficientNet-Lite was designed to quantize well (ReLU6, no squeeze-excitation), and CPUs with
VNNI instructions (AVX-512 VNNI, AVX-VNNI) multiply 8-bit integers several times as fast as
floats. `quantize_checkpoint` writes a self-contained ``.onnx`` file, used like any exported
model (``braintumor predict --model model-int8.onnx``):

1. the float graph of `braintumor.inference.export.onnx_bytes`, test-time view included when the
   checkpoint uses one;
2. onnxruntime's static quantization in QDQ form: weights int8 per output channel, activations
   uint8 per tensor, their ranges the minimum and maximum over `calibration` training images of
   the checkpoint's own split (never validation or test images). Only convolutions, ReLU6 and
   the residual additions are quantized; the sampling of the test-time view, the head's matrix
   product, softmax and the out-of-distribution score stay in float;
3. the out-of-distribution threshold set again on the int8 graph's scores of the validation
   images, at the same quantile as the checkpoint's: quantization noise moves the features, and
   so the Mahalanobis distances, a little;
4. both graphs scored on the validation images; the figures (accuracy, agreement, largest
   probability difference, ...) travel in the file's metadata under ``extra["int8"]``.

Quantizing needs the dataset the checkpoint was trained on, since the ranges come from images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from braintumor.errors import BrainTumorError
from braintumor.files import locked_folder
from braintumor.options import check

QUANTIZED_OPS = ("Conv", "Clip", "Relu", "Add")
DEFAULT_CALIBRATION = 200


def _calibration_rows(labels: np.ndarray, rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """About `n` of `rows`, the same share of each class (all of them when there are fewer)."""
    if len(rows) <= n:
        return rows
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels[rows]):
        of_class = rows[labels[rows] == label]
        take = max(1, round(n * len(of_class) / len(rows)))
        picked.append(rng.choice(of_class, min(take, len(of_class)), replace=False))
    return np.sort(np.concatenate(picked))


def cpu_has_vnni() -> bool:
    """Whether this CPU has the VNNI dot-product instructions (AVX-512 VNNI or AVX-VNNI), by its
    flags in /proc/cpuinfo (Linux); False where they cannot be read."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_graph(float_graph: bytes, calibration_images: np.ndarray, batch_size: int = 8, progress: bool = False) -> bytes:
    """Statically quantize an exported graph (see the module docstring, step 2).

    Parameters
    ----------
    float_graph : bytes
        An ONNX graph written by `braintumor.inference.export.onnx_bytes`.
    calibration_images : numpy.ndarray
        ``N x S x S x 3`` uint8 preprocessed images whose activations set the int8 ranges.

    Returns
    -------
    bytes
        The quantized graph, with `float_graph`'s metadata.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_images) == 0:
        raise BrainTumorError("calibration_images is empty: the int8 ranges need at least one image")

    starts = range(0, len(calibration_images), batch_size)
    bar = tqdm(total=len(starts), desc="calibrating int8 ranges", unit="batch", disable=not progress, leave=False)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                {"images": np.ascontiguousarray(calibration_images[i : i + batch_size], dtype=np.uint8)} for i in starts
            )

        def get_next(self):
            batch = next(self.batches, None)
            bar.update(batch is not None)
            return batch

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantized = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(float_graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(quantized), Batches(),
            quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=list(QUANTIZED_OPS),
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            # 7-bit weights: on CPUs without VNNI (AVX2 only) onnxruntime's uint8 x int8 products
            # saturate with 8-bit ones, and a tiny model's int8 answers agreed with its float32
            # ones on 80% of images instead of all (tests/inference/test_quantize.py)
            reduce_range=not cpu_has_vnni(),
        )
        graph = onnx.load(str(quantized))
    bar.close()
    del graph.metadata_props[:]
    graph.metadata_props.extend(onnx.load_from_string(float_graph).metadata_props)
    return graph.SerializeToString()


def _metadata(graph: bytes) -> dict:
    import onnx

    from braintumor.inference.export import METADATA_KEY

    return json.loads({p.key: p.value for p in onnx.load_from_string(graph).metadata_props}[METADATA_KEY])


def _with_metadata(graph: bytes, meta: dict) -> bytes:
    import onnx

    from braintumor.inference.export import METADATA_KEY

    model = onnx.load_from_string(graph)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(meta)
    return model.SerializeToString()


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    from braintumor.metrics.calibration import as_logits, expected_calibration_error, nll

    return {"accuracy": round(float((probs.argmax(1) == labels).mean()), 4),
            "nll": round(nll(as_logits(probs), labels), 4),
            "ece": round(float(expected_calibration_error(probs, labels)), 4)}


def fidelity(float_graph: bytes, int8_graph: bytes, images: np.ndarray, labels: np.ndarray, accept: float | None,
             progress: bool = False) -> dict:
    """Both graphs on labelled images (the validation set): the figures stored under ``extra["int8"]``,
    and, when `accept` is given, the int8 graph's out-of-distribution threshold at that quantile."""
    from braintumor.inference.runtime import OnnxRuntime
    from braintumor.inference.ood import threshold_at

    graphs = tqdm((float_graph, int8_graph), desc="checking float32 and int8 on validation", unit="graph",
                  disable=not progress, leave=False)
    (p32, s32), (p8, s8) = (OnnxRuntime(graph).run(images) for graph in graphs)
    report = {
        "images": int(len(labels)),
        "float32": _scores(p32, labels),
        "int8": _scores(p8, labels),
        "same_class": round(float((p32.argmax(1) == p8.argmax(1)).mean()), 4),
        "max_probability_difference": round(float(np.abs(p32 - p8).max()), 4),
        "mean_probability_difference": round(float(np.abs(p32 - p8).mean()), 5),
    }
    if accept is not None and np.isfinite(s8).all():
        report["ood_threshold"] = threshold_at(s8, accept)
        report["ood_score_correlation"] = round(float(np.corrcoef(s32, s8)[0, 1]), 4)
    return report


def quantize_checkpoint(
    checkpoint: str | Path,
    out: str | Path | None = None,
    data: str | Path | None = None,
    tta: bool | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Write an int8 ONNX model of a checkpoint, calibrated and checked on its own split.

    Parameters
    ----------
    checkpoint : path
        A ``.safetensors`` checkpoint written by ``braintumor train`` (the shipped model too).
    out : path, optional
        The ``.onnx`` file to write (default: the checkpoint's path with ``-int8.onnx``).
    data : path, optional
        The dataset the checkpoint was trained on, if it is no longer where training found it.
    tta : bool, optional
        Bake the test-time view in; the checkpoint's setting by default.
    calibration : int
        Training images whose activations set the int8 ranges (stratified by class).

    Returns
    -------
    path : Path
        The written file.
    report : dict
        The validation figures of the float and int8 graphs (also in the file's metadata).
    """
    from braintumor.inference.export import onnx_path

    calibration = check("calibration", calibration)
    checkpoint = Path(checkpoint)
    out = onnx_path(checkpoint, out, "-int8.onnx")
    with locked_folder(out.parent, existing_only=True):  # not into a run folder a training is writing
        return _quantize_checkpoint(checkpoint, out, data, tta, calibration, progress)


def _quantize_checkpoint(checkpoint: Path, out: Path, data, tta: bool | None, calibration: int,
                         progress: bool) -> tuple[Path, dict]:
    from braintumor.model.checkpoint import load_checkpoint
    from braintumor.inference.export import onnx_bytes, write_onnx
    from braintumor.data.protocols import load_run, run_labels

    model, info = load_checkpoint(checkpoint)
    images, found, split = load_run(checkpoint, info, data, progress)
    labels = run_labels(found, info.train_config, np.r_[split.train, split.val])
    float_graph = onnx_bytes(model, info, tta)
    rows = _calibration_rows(labels, split.train, calibration)
    int8_graph = quantize_graph(float_graph, images[rows], progress=progress)

    ood = info.extra.get("ood")
    report = fidelity(float_graph, int8_graph, images[split.val], labels[split.val], ood["accept"] if ood else None,
                      progress)
    report["calibration_images"] = int(len(rows))
    report["quantized_ops"] = list(QUANTIZED_OPS)
    meta = _metadata(int8_graph)
    if ood and "ood_threshold" in report:
        meta["extra"]["ood"] = {**meta["extra"]["ood"], "threshold": report["ood_threshold"],
                                "float32_threshold": ood["threshold"]}
    meta["extra"]["int8"] = report
    return write_onnx(_with_metadata(int8_graph, meta), out), report
