"""Inference: probabilities for arrays of preprocessed images, and a `Predictor` for files."""

from __future__ import annotations

import csv
import importlib.util
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .augment import MirrorView, to_float
from .errors import BrainTumorError, ImageError
from .imageio import is_image_file, iter_frames

DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.safetensors"
NOT_BRAIN_MRI = "not_brain_mri"
RUNTIMES = ("auto", "torch", "onnx")


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    tta: bool = False,
    bf16: bool = False,
    temperature: float = 1.0,
    tta_view: MirrorView = MirrorView(),
) -> np.ndarray:
    """Class probabilities for preprocessed ``N x S x S x 3`` uint8 images.

    Parameters
    ----------
    tta : bool
        Average the logits of each image and its test-time view.
    tta_view : MirrorView
        That view: the mirror, possibly rotated (the checkpoint's ``info.tta_view``).
    bf16 : bool
        Run in bfloat16 autocast (faster on CPUs with AVX-512 BF16; used during training).
    temperature : float
        Divide logits by this before the softmax (calibration, see issue on calibration).
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if tta:  # one forward pass over the images and their views
                both = model(torch.cat([x, tta_view.apply(x)])).float()
                logits = (both[: len(x)] + both[len(x) :]) / 2
            else:
                logits = model(x).float()
        out.append(torch.softmax(logits / temperature, dim=1).numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float64)


@dataclass
class Prediction:
    """The result for one image (one frame of a multi-frame DICOM file), or an error.

    `label` is the predicted class, or ``"not_brain_mri"`` when the out-of-distribution detector
    rejects the image: then ``accepted`` is False, `reason` says why, and `top_class` and
    `probabilities` still hold the model's (unreliable) answer. `ood_score` and `accepted` are
    None for a model without a detector.
    """

    path: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    frame: int | None = None
    top_class: str | None = None
    ood_score: float | None = None
    accepted: bool | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def write_csv(results: list[Prediction], classes: list[str], out) -> None:
    """Write predictions as CSV to a path or an open text file: path, frame, label, top_class,
    one probability column per class, ood_score, accepted, reason, error."""
    columns = ["path", "frame", "label", "top_class", *[f"p_{c}" for c in classes], "ood_score", "accepted", "reason", "error"]
    handle = open(out, "w", newline="") if isinstance(out, (str, Path)) else out
    try:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in results:
            probs = [f"{r.probabilities[c]:.6f}" if c in r.probabilities else "" for c in classes]
            score = "" if r.ood_score is None else f"{r.ood_score:.4f}"
            accepted = "" if r.accepted is None else str(r.accepted).lower()
            writer.writerow([r.path, r.frame or "", r.label or "", r.top_class or "", *probs, score, accepted, r.reason or "", r.error or ""])
    finally:
        if handle is not out:
            handle.close()


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[Prediction]]:
    """Expand files and folders (recursively) into image paths; missing paths become errors."""
    files: list[Path] = []
    errors: list[Prediction] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))
            if not found:
                errors.append(Prediction(str(path), error="folder holds no JPEG/PNG/BMP/TIFF/DICOM images"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(Prediction(str(path), error="no such file or folder"))
    return files, errors


def _load_member(checkpoint: str | Path | None, threads: int | None, tta: bool | None, spin: bool):
    """``(path, model, info, onnx)`` of one model for `Predictor`: an ``.onnx`` file comes with its
    `OnnxRuntime` and no ``model``; a checkpoint with its PyTorch ``model`` and no runtime yet."""
    from .checkpoint import load_checkpoint
    from .export import OnnxRuntime

    path = Path(checkpoint) if checkpoint else DEFAULT_MODEL
    if checkpoint is None and not path.is_file():
        raise BrainTumorError("no model shipped with this installation", "pass --model PATH to a checkpoint")
    if path.suffix == ".onnx":
        if tta is not None:
            raise BrainTumorError("tta is fixed inside an exported .onnx model", "re-export it with or without --no-tta")
        onnx = OnnxRuntime(path, threads, spin)
        return path, None, onnx.info, onnx
    model, info = load_checkpoint(path)
    return path, model.to(memory_format=torch.channels_last), info, None


def _runtime(path: Path, model, info, runtime: str, threads: int | None, tta: bool | None, spin: bool):
    """The runtime that runs one checkpoint's `model`: onnxruntime (its graph cached) or PyTorch."""
    from .export import OnnxRuntime, cached_onnx_bytes
    from .inference import TorchRuntime

    if runtime == "onnx":
        return OnnxRuntime(cached_onnx_bytes(path, model, info, tta), threads, spin)
    return TorchRuntime(model, info, tta)


def _threshold(info) -> float | None:
    """A checkpoint's out-of-distribution threshold, None when it has no detector."""
    from .ood import OODStats

    ood = OODStats.load_from(info)
    return None if ood is None else float(ood.threshold)


class Predictor:
    """A loaded model with its preprocessing, for predicting files.

    Parameters
    ----------
    checkpoint : path or list of paths, optional
        A ``.safetensors`` checkpoint, or an ``.onnx`` file written by ``braintumor export``
        (which implies ``runtime="onnx"``); the model shipped with the package by default. Several
        are an ensemble: their calibrated probabilities are averaged (one network pass per
        member), and an image is rejected as out-of-distribution when the mean of the members'
        scores, each divided by its threshold, exceeds 1. In onnxruntime, checkpoints run as one
        cached graph (`braintumor.export.ensemble_onnx_bytes`); otherwise, or with ``.onnx``
        members, each model runs on its own (`EnsembleRuntime`).
    threads : int, optional
        Intra-op threads of torch or onnxruntime (default: all cores).
    runtime : {"auto", "torch", "onnx"}
        Run the network in PyTorch, or export it to ONNX (cached, see `cached_onnx_bytes`) and
        run it in onnxruntime, about twice as fast on a CPU. ``auto`` (default) picks onnxruntime
        when it is installed.
    tta : bool, optional
        Override the checkpoint's test-time augmentation (off is twice as fast).

    Examples
    --------
    >>> predictor = Predictor()                                  # doctest: +SKIP
    >>> predictor.predict(["scan.jpg"])[0].label                 # doctest: +SKIP
    'glioma'
    """

    def __init__(
        self, checkpoint: str | Path | list | None = None, threads: int | None = None, runtime: str = "auto",
        tta: bool | None = None,
    ):
        from .export import OnnxRuntime, cached_onnx_bytes
        from .inference import EnsembleRuntime, check_same_inputs

        if runtime not in RUNTIMES:
            raise BrainTumorError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
        if runtime == "auto":
            runtime = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
        if threads:
            torch.set_num_threads(threads)
        paths = [Path(c) for c in checkpoint] if isinstance(checkpoint, (list, tuple)) else [checkpoint]
        if not paths:
            raise BrainTumorError("no model given", "pass one checkpoint, or several for an ensemble")
        spin = len(paths) == 1  # threads spin only where no other session waits for the cores
        members = [_load_member(path, threads, tta, spin) for path in paths]
        self.path, self.model, self.info, _ = members[0]
        self.paths = [m[0] for m in members]
        self.models = [m[1] for m in members]  # the PyTorch networks (None for .onnx members), for Grad-CAM
        for path, _, info, _ in members[1:]:
            check_same_inputs(path, info, self.path, self.info)
        if runtime == "onnx" and len(members) > 1 and None not in self.models:
            # one graph for the whole ensemble, cached like a single model's: for three models
            # about 1.2 times the throughput of a session per member (predict_speed_ensemble3*.json)
            rest = [(path, model, info) for path, model, info, _ in members[1:]]
            self.runtime = OnnxRuntime(cached_onnx_bytes(self.path, self.model, self.info, tta, rest), threads)
        else:
            runtimes = [onnx or _runtime(path, model, info, runtime, threads, tta, spin)
                        for path, model, info, onnx in members]
            self.runtime = runtimes[0] if len(runtimes) == 1 else EnsembleRuntime(runtimes)
        # each model's own OOD threshold (None: no detector), for `no_detector_note`
        self.member_thresholds = [onnx.threshold if onnx else _threshold(info) for _, _, info, onnx in members]
        if len(members) > 1:
            self.model = None  # one network; an ensemble's are in `models`
        self.classes = list(self.info.classes)
        self.threshold = self.runtime.threshold
        # decoding threads, kept for the predictor's life (starting them costs ~2 ms per call)
        self._pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="decode")

    def _load(self, path: Path, frame: int | None) -> list[tuple[int | None, np.ndarray]] | str:
        """Decode and preprocess every frame of a file, or return the reason it cannot be read."""
        try:
            return [(number, self.info.preprocess(rgb)) for number, rgb in iter_frames(path, frame)]
        except ImageError as exc:
            return exc.message.split(": ", 1)[-1] if exc.message.startswith(str(path)) else exc.message

    def predict_proba_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for already preprocessed ``N x S x S x 3`` uint8 images."""
        return self.runtime.run(images)[0]

    def _finish(self, result: Prediction, probs: np.ndarray, score: float) -> None:
        """Fill in a result: class, probabilities and the out-of-distribution decision."""
        result.probabilities = {c: float(v) for c, v in zip(self.classes, probs)}
        result.top_class = result.label = self.classes[int(np.argmax(probs))]
        if np.isnan(score) or self.threshold is None:
            return
        result.ood_score = float(score)
        result.accepted = bool(score <= self.threshold)
        if not result.accepted:
            result.label = NOT_BRAIN_MRI
            result.reason = (
                f"unlike the brain MRI slices the model was trained on (out-of-distribution score {score:.1f} > "
                f"threshold {self.threshold:.1f}); the class probabilities are unreliable"
            )

    def predict(
        self, inputs: list[str | Path], batch_size: int = 32, progress: bool = False, frame: int | None = None
    ) -> list[Prediction]:
        """Predict image files and folders (decoded in parallel threads while the model runs).

        Parameters
        ----------
        inputs : list of path
            Files and folders (searched recursively).
        batch_size : int
            Images handed to the runtime at once (it may run them in smaller chunks); files are
            decoded up to twice that many ahead.
        frame : int, optional
            Only this frame (from 1) of multi-frame DICOM files; every frame by default.

        Returns
        -------
        list of Prediction
            One per image (per frame), in input order; unreadable files have `error` set.
        """
        if batch_size < 1:
            raise BrainTumorError(f"batch_size must be at least 1, got {batch_size}")
        files, results = expand_inputs(inputs)
        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress or len(files) < 2)
        waiting: list[tuple[Prediction, np.ndarray]] = []

        def flush():
            if waiting:
                probs, scores = self.runtime.run(np.stack([image for _, image in waiting]))
                for (result, _), p, score in zip(waiting, probs, scores):
                    self._finish(result, p, score)
                waiting.clear()

        def load(path: Path) -> Future:
            """Decode in the pool's threads, ahead of the model; a lone file in this thread."""
            if len(files) > 1:
                return self._pool.submit(self._load, path, frame)
            done = Future()
            done.set_result(self._load(path, frame))
            return done

        queue = deque()
        todo = iter(files)
        for path in todo:  # keep a bounded number of files decoding ahead of the model
            queue.append((path, load(path)))
            if len(queue) >= 2 * batch_size:
                break
        while queue:
            path, future = queue.popleft()
            following = next(todo, None)
            if following is not None:
                queue.append((following, load(following)))
            loaded = future.result()
            if isinstance(loaded, str):
                results.append(Prediction(str(path), error=loaded))
            for number, image in [] if isinstance(loaded, str) else loaded:
                results.append(Prediction(str(path), frame=number))
                waiting.append((results[-1], image))
                if len(waiting) >= batch_size:
                    flush()
            bar.update(1)
        flush()
        bar.close()
        return results


def no_detector_note(predictor: Predictor) -> str | None:
    """A note for models without out-of-distribution statistics, else None."""
    if predictor.threshold is not None:
        return None
    path = next(p for p, t in zip(predictor.paths, predictor.member_thresholds) if t is None)
    return (f"note: {path.name} has no out-of-distribution statistics, so no input is rejected as "
            f"'not a brain MRI'; add them with `braintumor fit-ood {path}`")
