"""Inference: probabilities for arrays of preprocessed images, and a `Predictor` for files."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from braintumor.errors import BrainTumorError, ImageError
from braintumor.files import locked_folder, write_text
from braintumor.options import cap_threads, check
from braintumor.data.imageio import is_image_file, load_frames
from braintumor.data.nifti import is_nifti_file

DEFAULT_MODEL = Path(__file__).parents[1] / "weights" / "default.safetensors"
NOT_BRAIN_MRI = "not_brain_mri"
RUNTIMES = ("auto", "torch", "onnx")


@dataclass
class Prediction:
    """The result for one image (one frame of a multi-frame DICOM file, one slice of a NIfTI
    volume), or an error.

    `label` is the predicted class, or ``"not_brain_mri"`` when the out-of-distribution detector
    rejects the image: then ``accepted`` is False, `reason` says why, and `top_class` and
    `probabilities` still hold the model's (unreliable) answer. `ood_score` and `accepted` are
    None for a model without a detector. For a slice of a NIfTI volume, `frame` is its number
    (from 1) along the slice axis `axis`, and `slices` the number of slices along that axis,
    kept or skipped for too little brain (`braintumor.inference.volume.summarise_volume`).
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
    axis: int | None = None
    slices: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def write_csv(results: list[Prediction], classes: list[str], out) -> None:
    """Write predictions as CSV to a path or an open text file: path, frame, label, top_class,
    one probability column per class, ood_score, accepted, reason, error."""
    columns = ["path", "frame", "label", "top_class", *[f"p_{c}" for c in classes], "ood_score", "accepted", "reason", "error"]
    handle = io.StringIO(newline="") if isinstance(out, (str, Path)) else out
    writer = csv.writer(handle)
    writer.writerow(columns)
    for r in results:
        probs = [f"{r.probabilities[c]:.6f}" if c in r.probabilities else "" for c in classes]
        score = "" if r.ood_score is None else f"{r.ood_score:.4f}"
        accepted = "" if r.accepted is None else str(r.accepted).lower()
        writer.writerow([r.path, "" if r.frame is None else r.frame, r.label or "", r.top_class or "", *probs, score, accepted, r.reason or "", r.error or ""])
    if handle is not out:  # a file: written atomically, not into a folder a command holds (braintumor.files)
        with locked_folder(Path(out).parent, existing_only=True):
            write_text(out, handle.getvalue())


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[Prediction]]:
    """Expand files and folders (recursively) into image paths.

    Missing paths become errors, and so does every file in a folder that is not of a type
    `read_image` reads (hidden files apart), with the reason: nothing is skipped without a word.
    """
    files: list[Path] = []
    errors: list[Prediction] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            images = [p for p in found if is_readable(p)]
            if not images:
                errors.append(Prediction(str(path), error="folder holds no JPEG/PNG/BMP/TIFF/DICOM images or NIfTI volumes"))
            errors.extend(Prediction(str(p), error=skip_reason(p)) for p in found if not is_readable(p))
            files.extend(images)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(Prediction(str(path), error="no such file or folder"))
    return files, errors


def is_readable(path: Path) -> bool:
    """Whether a file found in a folder is predicted: an image `read_image` reads, or a NIfTI
    volume (``.nii``, ``.nii.gz``)."""
    return is_image_file(path) or is_nifti_file(path)


def skip_reason(path: Path) -> str:
    """Why a file found in a folder is not predicted."""
    name = path.name.lower()
    if name.endswith(".gif"):
        return "skipped: GIF is not read inside folders; convert it to PNG, or pass the file by name"
    return f"skipped: not an image type braintumor reads ({path.suffix or 'no extension'}); JPEG, PNG, BMP, TIFF, DICOM and NIfTI are"


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
        cached graph (`braintumor.inference.export.ensemble_onnx_bytes`); otherwise, or with ``.onnx``
        members, each model runs on its own (`braintumor.inference.runtime.EnsembleRuntime`).
    threads : int, optional
        Intra-op threads of torch or onnxruntime (default: all cores).
    runtime : {"auto", "torch", "onnx"}
        Run the network in PyTorch, or export it to ONNX (cached, see
        `braintumor.inference.runtime.onnx_cache_path`) and run it in onnxruntime, about twice as fast on
        a CPU. ``auto`` (default) picks onnxruntime when it is installed. With a cached graph,
        PyTorch is not even imported: a process that predicts one image starts in well under a
        second (`models` still loads the networks when asked).
    tta : bool, optional
        Override the checkpoint's test-time augmentation (off is twice as fast).
    progress : bool
        Say on stderr when a graph is exported before its first use (a few seconds).
    device : str, optional
        Where the network runs (``--device``): ``cpu`` (default), ``auto``, ``cuda``, ``cuda:N``,
        ``mps``. In PyTorch, the device itself (`braintumor.model.device.resolve_device`: one
        that is not there is an error). In onnxruntime, the CUDA execution provider when it is
        installed and a GPU is asked for, else the CPU one (`device_note` then says so; see
        `braintumor.inference.runtime.onnx_providers`); PyTorch is not imported for it.

    Examples
    --------
    >>> predictor = Predictor()                                  # doctest: +SKIP
    >>> predictor.predict(["scan.jpg"])[0].label                 # doctest: +SKIP
    'glioma'
    """

    def __init__(
        self, checkpoint: str | Path | list | None = None, threads: int | None = None, runtime: str = "auto",
        tta: bool | None = None, progress: bool = False, device: str | None = None,
    ):
        from braintumor.model.checkpoint import check_same_inputs, read_metadata
        from braintumor.inference.runtime import EnsembleRuntime, OnnxRuntime, onnx_providers

        if runtime not in RUNTIMES:
            raise BrainTumorError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
        threads = cap_threads(threads)
        self.device_name = check("device", device or "cpu").strip().lower()
        self.device_note = None
        if runtime == "auto":
            runtime = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
        self._providers, self._torch_device = None, None
        if runtime == "onnx":
            self._providers, self.device_note = onnx_providers(self.device_name)
        else:  # PyTorch is needed anyway: a device that is not there fails now, before any file is read
            from braintumor.model.device import resolve_device

            self._torch_device = resolve_device(self.device_name)
        given = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
        if not given:
            raise BrainTumorError("no model given", "pass one checkpoint, or several for an ensemble")
        if checkpoint is None and not DEFAULT_MODEL.is_file():
            raise BrainTumorError("no model shipped with this installation", "pass --model PATH to a checkpoint")
        self.paths = [Path(c) if c else DEFAULT_MODEL for c in given]
        self.path = self.paths[0]
        spin = len(self.paths) == 1  # threads spin only where no other session waits for the cores
        if tta is not None and any(p.suffix == ".onnx" for p in self.paths):
            raise BrainTumorError("tta is fixed inside an exported .onnx model", "re-export it with or without --no-tta")
        exported = {i: OnnxRuntime(p, threads, spin, self._providers) for i, p in enumerate(self.paths) if p.suffix == ".onnx"}
        infos = [exported[i].info if i in exported else read_metadata(p) for i, p in enumerate(self.paths)]
        self.info, self._infos, self._progress = infos[0], infos, progress
        for path, info in zip(self.paths[1:], infos[1:]):
            check_same_inputs(path, info, self.path, self.info)
        self._loaded: list = [None] * len(self.paths)  # (PyTorch network, full ModelInfo), on first use
        # `member_thresholds`: each model's own OOD threshold (None: no detector), for `no_detector_note`
        if runtime == "onnx" and not exported:
            # every model a checkpoint: one graph, the ensemble's too (for three models about 1.2
            # times the throughput of a session per member, predict_speed_ensemble3*.json)
            self.runtime = OnnxRuntime(self._graph(tta), threads, providers=self._providers)
            self.member_thresholds = self.runtime.member_thresholds
        else:
            if runtime == "torch" and threads:
                import torch

                torch.set_num_threads(threads)
            runtimes = [exported.get(i) or self._member_runtime(i, runtime, threads, tta, spin)
                        for i in range(len(self.paths))]
            self.runtime = runtimes[0] if len(runtimes) == 1 else EnsembleRuntime(runtimes)
            self.member_thresholds = [r.threshold for r in runtimes]
        self.classes = list(self.info.classes)
        self.threshold = self.runtime.threshold
        # decoding threads, kept for the predictor's life (starting them costs ~2 ms per call)
        self._pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="decode")

    @property
    def models(self) -> list:
        """The models' PyTorch networks (None for ``.onnx`` members), loaded on first use:
        Grad-CAM needs them; prediction in onnxruntime from a cached graph does not."""
        return [None if p.suffix == ".onnx" else self._checkpoint(i)[0] for i, p in enumerate(self.paths)]

    @property
    def model(self):
        """The PyTorch network of a single checkpoint (None for an ensemble or an ``.onnx`` file)."""
        return self.models[0] if len(self.paths) == 1 else None

    def _checkpoint(self, i: int) -> tuple:
        """``(network, ModelInfo with its arrays)`` of checkpoint `i`, loaded (with PyTorch) once."""
        if self._loaded[i] is None:
            import torch

            from braintumor.model.checkpoint import load_checkpoint

            model, info = load_checkpoint(self.paths[i])
            device = self._torch_device or torch.device("cpu")  # (networks behind onnxruntime: Grad-CAM and export, on the CPU)
            self._loaded[i] = (model.to(device=device, memory_format=torch.channels_last), info)
        return self._loaded[i]

    def _member_runtime(self, i: int, runtime: str, threads: int | None, tta: bool | None, spin: bool):
        """The runtime of checkpoint `i` on its own: its cached graph in onnxruntime, or PyTorch."""
        from braintumor.inference.runtime import OnnxRuntime

        if runtime == "onnx":
            return OnnxRuntime(self._graph(tta, [i]), threads, spin, self._providers)
        from braintumor.inference.forward import TorchRuntime

        return TorchRuntime(*self._checkpoint(i), tta)

    def _graph(self, tta: bool | None, members: list | None = None) -> bytes:
        """The ONNX graph of checkpoints `members` (default: all), as one ensemble: read from the
        cache, else exported with PyTorch (only the first use of these checkpoints)."""
        from braintumor.inference.runtime import onnx_cache_path

        members = list(range(len(self.paths))) if members is None else members
        if tta is not None and all(self._infos[i].tta == bool(tta) for i in members):
            tta = None  # each model's own setting spelled out: the same graph, so the same cache entry
        cached = onnx_cache_path([self.paths[i] for i in members], tta)
        if cached.is_file():
            return cached.read_bytes()
        from braintumor.inference.export import cached_onnx_bytes

        if self._progress:
            names = ", ".join(self.paths[i].name for i in members)
            print(f"exporting {names} to ONNX for onnxruntime (first use only, a few seconds)", file=sys.stderr)

        first, *rest = [(self.paths[i], *self._checkpoint(i)) for i in members]
        return cached_onnx_bytes(*first, tta, rest, path=cached)

    def _load(self, path: Path, frame: int | None, axis: int | None = None, volume: int | None = None
              ) -> tuple[list[tuple[int | None, np.ndarray]], dict] | str:
        """Decode and preprocess every frame (slice) of a file, with the fields its records carry
        (`braintumor.data.imageio.load_frames`), or return the reason it cannot be read."""
        try:
            frames, extra = load_frames(path, frame, axis, volume)
            return [(number, self.info.preprocess(rgb)) for number, rgb in frames], extra
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
        self, inputs: list[str | Path], batch_size: int = 32, progress: bool = False, frame: int | None = None,
        axis: int | None = None, volume: int | None = None,
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
            Only this frame (from 1) of multi-frame DICOM files, and this slice (from 1) of NIfTI
            volumes; every frame, and every slice with enough brain, by default.
        axis : int, optional
            Take the slices of NIfTI volumes along this array axis (0, 1 or 2); default: the
            axial one of each volume's orientation (`braintumor.data.nifti`).
        volume : int, optional
            Which volume (from 1) of 4-D NIfTI series (required for them).

        Returns
        -------
        list of Prediction
            One per image (per frame, per slice), in input order; unreadable files have `error`
            set. `braintumor.inference.volume.summarise_volumes` sums up the slices of volumes.
        """
        batch_size = check("batch_size", batch_size)
        axis, volume = check("axis", axis, allow_none=True), check("volume", volume, allow_none=True)
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
                return self._pool.submit(self._load, path, frame, axis, volume)
            done = Future()
            done.set_result(self._load(path, frame, axis, volume))
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
            frames, extra = ([], {}) if isinstance(loaded, str) else loaded
            for number, image in frames:
                results.append(Prediction(str(path), frame=number, **extra))
                waiting.append((results[-1], image))
                if len(waiting) >= batch_size:
                    flush()
            bar.update(1)
        flush()
        bar.close()
        return results

    # In-memory images: the same records, from `braintumor.inference.memory` (what `braintumor serve` uses).

    def predict_bytes(self, data: bytes, name: str = "upload", frame: int | None = None) -> list[Prediction]:
        """Predict an encoded image held in memory (JPEG, PNG, BMP, TIFF, DICOM or NIfTI, told from
        the content): one record per image (per DICOM frame, per NIfTI slice). Raises `ImageError`
        for data that cannot be read (`UnsupportedImageError` for another type). See
        `braintumor.inference.memory.predict_bytes`."""
        from braintumor.inference.memory import predict_bytes

        return predict_bytes(self, data, name, frame)

    def predict_image(self, image, name: str = "image") -> Prediction:
        """Predict a Pillow image (any mode). See `braintumor.inference.memory.predict_image`."""
        from braintumor.inference.memory import predict_image

        return predict_image(self, image, name)

    def predict_array(self, array: np.ndarray, name: str = "array") -> Prediction:
        """Predict an image array: ``H x W`` grayscale, ``H x W x 3`` RGB or ``H x W x 4`` RGBA, of
        any numeric type. See `braintumor.inference.memory.predict_array`."""
        from braintumor.inference.memory import predict_array

        return predict_array(self, array, name)


def no_detector_note(predictor: Predictor) -> str | None:
    """A note for models without out-of-distribution statistics, else None."""
    if predictor.threshold is not None:
        return None
    path = next(p for p, t in zip(predictor.paths, predictor.member_thresholds) if t is None)
    return (f"note: {path.name} has no out-of-distribution statistics, so no input is rejected as "
            f"'not a brain MRI'; add them with `braintumor fit-ood {path}`")
