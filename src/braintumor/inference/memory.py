"""Predicting images held in memory: encoded bytes (an upload), a PIL image or a NumPy array.

Every function returns the result record of `Predictor.predict` for files, `Prediction` (class,
calibrated probabilities, the out-of-distribution decision and score, the reason of a
rejection), built by the same code (`Predictor._finish`). `result_warnings` lists what a reader
of one result should know, and `explain_bytes` / `explain_frames` add a Grad-CAM heatmap
(PyTorch is imported only there: the prediction path stays torch-free).

Examples
--------
>>> from braintumor.inference import Predictor                    # doctest: +SKIP
>>> from braintumor.inference.memory import predict_bytes          # doctest: +SKIP
>>> predict_bytes(Predictor(), open("scan.jpg", "rb").read())[0].label   # doctest: +SKIP
'glioma'
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from braintumor.data.imageio import iter_frames_from_bytes, pil_to_rgb
from braintumor.data.nifti import read_nifti_bytes
from braintumor.errors import ImageError
from braintumor.inference.predictor import NOT_BRAIN_MRI, Prediction, Predictor, no_detector_note
from braintumor.inference.volume import VolumeSummary, summarise_volume

# Grad-CAM hooks the shared PyTorch network: one explanation at a time per process.
_GRADCAM_LOCK = threading.Lock()


@dataclass
class Explained:
    """A prediction with its Grad-CAM explanation.

    Attributes
    ----------
    prediction : Prediction
        The same record `predict_bytes` gives.
    image : numpy.ndarray
        ``S x S x 3`` uint8: the image as the network sees it (cropped, padded, resized).
    heatmap : numpy.ndarray
        ``S x S`` float32 in ``[0, 1]``, aligned with `image`: where the evidence for `target` lies.
    target : str
        The explained class (the model's top class unless another was asked for).
    """

    prediction: Prediction
    image: np.ndarray
    heatmap: np.ndarray
    target: str


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB array from a grayscale (``H x W`` or ``H x W x 1``), RGB or
    RGBA array of any numeric type; other than uint8, values are rescaled by their own range
    (as 16-bit images are read).

    Raises
    ------
    ImageError
        For another shape, an empty array, or non-finite values.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise ImageError(f"an image array must be H x W, H x W x 1, H x W x 3 or H x W x 4, got shape {array.shape}",
                         "pass one 2D slice (a grayscale or RGB array)")
    if not np.issubdtype(array.dtype, np.number):
        raise ImageError(f"an image array must be numeric, got {array.dtype}", "pass a uint8, integer or float array")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError("the image array holds NaN or infinite values", "replace them before predicting")
        if array.ndim == 3 and array.shape[2] == 4:  # rescale the colour, keep the transparency as it was
            values = values[:, :, :3]
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros(values.shape) if hi <= lo else (values - lo) * (255.0 / (hi - lo))
        array = np.round(scaled).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        return pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    return np.ascontiguousarray(array)


def predict_frames(predictor: Predictor, frames: Iterable[tuple[int | None, np.ndarray]], name: str) -> list[Prediction]:
    """Predict decoded images (``(frame number or None, H x W x 3 uint8)`` pairs) as one batch."""
    frames = list(frames)
    images = np.stack([predictor.info.preprocess(rgb) for _, rgb in frames]) if frames else None
    return _records(predictor, [number for number, _ in frames], images, name)


def _records(predictor: Predictor, numbers: list, images: np.ndarray | None, name: str) -> list[Prediction]:
    """The records of preprocessed images: the one place where in-memory images become
    `Prediction`s, through the runtime and `Predictor._finish`, as files do in `Predictor.predict`."""
    if images is None:
        return []
    probs, scores = predictor.runtime.run(images)
    results = []
    for number, p, score in zip(numbers, probs, scores):
        results.append(Prediction(name, frame=number))
        predictor._finish(results[-1], p, score)
    return results


def decode(data: bytes, name: str = "upload", frame: int | None = None, max_frames: int | None = None,
           max_unpacked: int | None = None) -> list[tuple[int | None, np.ndarray]]:
    """Decode encoded image bytes (JPEG, PNG, BMP, TIFF, DICOM or a NIfTI volume's slices, told
    from the content) into ``(frame number or None, H x W x 3 uint8)`` pairs.

    Parameters
    ----------
    max_frames : int, optional
        Refuse a multi-frame DICOM file of more frames than this (unless one `frame` is chosen).
    max_unpacked : int, optional
        Refuse a NIfTI volume of more bytes than this once unpacked.

    Raises
    ------
    UnsupportedImageError
        Not one of the types above.
    ImageError
        Empty, undecodable, too large, a frame out of range, or too many frames.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "send the image's bytes")
    frames = iter_frames_from_bytes(data, name, frame, max_unpacked)
    if max_frames is None:
        return list(frames)
    taken = list(itertools.islice(frames, max_frames + 1))
    if len(taken) > max_frames:
        raise ImageError(f"{name}: more than {max_frames} frames in one file",
                         "choose one frame (the frame parameter), or split the series")
    return taken


def predict_bytes(predictor: Predictor, data: bytes, name: str = "upload", frame: int | None = None,
                  max_frames: int | None = None) -> list[Prediction]:
    """Predict an encoded image held in memory (an upload, a blob from a database).

    Parameters
    ----------
    predictor : Predictor
    data : bytes
        A JPEG, PNG, BMP, TIFF, DICOM or NIfTI file's bytes; the type is read from the content.
    name : str
        Stored as the records' `path`, and names the image in error messages.
    frame : int, optional
        Only this frame (from 1) of a multi-frame DICOM file; every frame by default.
    max_frames : int, optional
        Refuse files of more frames than this.

    Returns
    -------
    list of Prediction
        One per image (per DICOM frame), as `Predictor.predict` gives for a file.

    Raises
    ------
    ImageError
        As `decode` (`UnsupportedImageError` for a type that is not read).
    """
    return predict_frames(predictor, decode(data, name, frame, max_frames), name)


def predict_volume_bytes(predictor: Predictor, data: bytes, name: str = "upload", frame: int | None = None,
                         max_unpacked: int | None = None) -> tuple[list[Prediction], VolumeSummary]:
    """Predict the slices of a NIfTI volume held in memory (gzipped or not) and sum them up.

    The slices are those `braintumor.data.nifti.read_nifti_bytes` keeps along the volume's axial
    axis (or only slice `frame`); the summary is `braintumor.inference.volume.summarise_volume`'s:
    slice-level evidence, not a diagnosis.

    Raises
    ------
    ImageError
        Not a readable volume, larger than `max_unpacked` bytes once unpacked, or `frame` out of range.
    """
    volume = read_nifti_bytes(data, name, frame=frame, max_unpacked=max_unpacked)
    results = predict_frames(predictor, volume.slices, name)
    for result in results:
        result.axis, result.slices = volume.axis, volume.count
    return results, summarise_volume(results)


def predict_image(predictor: Predictor, image: Image.Image, name: str = "image") -> Prediction:
    """Predict a Pillow image (any mode: grayscale, 16-bit, RGBA, palette, ...)."""
    return predict_frames(predictor, [(None, pil_to_rgb(image))], name)[0]


def predict_array(predictor: Predictor, array: np.ndarray, name: str = "array") -> Prediction:
    """Predict an image array (see `array_to_rgb` for the shapes and types accepted)."""
    return predict_frames(predictor, [(None, array_to_rgb(array))], name)[0]


def explain_frames(predictor: Predictor, frames: Iterable[tuple[int | None, np.ndarray]], name: str,
                   target: str | None = None) -> list[Explained]:
    """`predict_frames` plus a Grad-CAM heatmap of each image, for `target` or the top class.

    Needs the PyTorch networks of `predictor` (imported and loaded on first use, a few seconds):
    a `Predictor` of ``.safetensors`` checkpoints, not of exported ``.onnx`` files. The
    probabilities are those of `predict_frames`; an ensemble's heatmap is the mean of its
    members' (`braintumor.inference.explain.ensemble_gradcam`). Thread-safe: explanations run
    one at a time.

    Raises
    ------
    BrainTumorError
        No PyTorch network (an ``.onnx`` model), or an unknown `target`.
    """
    from braintumor.errors import BrainTumorError

    frames = list(frames)
    classes = predictor.classes
    if target is not None and target not in classes:
        raise BrainTumorError(f"unknown target class {target!r}", "choose one of: " + ", ".join(classes))
    if not frames:
        return []
    images = np.stack([predictor.info.preprocess(rgb) for _, rgb in frames])
    predictions = _records(predictor, [number for number, _ in frames], images, name)
    indices = [classes.index(target or p.top_class) for p in predictions]
    with _GRADCAM_LOCK:
        from braintumor.inference.explain import ensemble_gradcam

        models = predictor.models
        if any(model is None for model in models):
            raise BrainTumorError("Grad-CAM needs the PyTorch model", "serve .safetensors checkpoints, not .onnx files")
        heatmaps = ensemble_gradcam(models, images, indices)
    return [Explained(p, image, heatmap, classes[i]) for p, image, heatmap, i in zip(predictions, images, heatmaps, indices)]


def explain_bytes(predictor: Predictor, data: bytes, name: str = "upload", frame: int | None = None,
                  target: str | None = None, max_frames: int | None = None, max_unpacked: int | None = None
                  ) -> list[Explained]:
    """`predict_bytes` with a Grad-CAM heatmap per image (see `explain_frames`)."""
    return explain_frames(predictor, decode(data, name, frame, max_frames, max_unpacked), name, target)


def result_warnings(predictor: Predictor, prediction: Prediction) -> list[str]:
    """What a reader of one result should be told besides its class, in plain sentences."""
    notes = []
    if prediction.label == NOT_BRAIN_MRI:
        notes.append(f"This image does not look like a brain MRI slice: {prediction.reason}.")
    elif prediction.top_class is not None and max(prediction.probabilities.values()) < 0.6:
        notes.append("The model is unsure: no class reaches 60% probability.")
    note = no_detector_note(predictor)
    if note:
        notes.append(note.removeprefix("note: ") + ".")
    return notes


# Anchors of the heatmap's colour scale (low evidence → high): dark blue, blue, cyan, yellow, red.
_ANCHORS = np.array([[0, 0, 110], [0, 90, 255], [0, 230, 230], [255, 225, 0], [225, 20, 0]], dtype=np.float64)


def heatmap_rgba(heatmap: np.ndarray) -> np.ndarray:
    """Colour an ``S x S`` heatmap in ``[0, 1]``: ``S x S x 4`` uint8 whose colour runs from blue
    (little evidence) to red and whose opacity rises with the evidence, so that the image shows
    through where the model does not look."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0.0, 1.0)
    position = heat * (len(_ANCHORS) - 1)
    low = np.minimum(position.astype(int), len(_ANCHORS) - 2)
    fraction = (position - low)[..., None]
    rgb = _ANCHORS[low] * (1 - fraction) + _ANCHORS[low + 1] * fraction
    alpha = 255 * np.clip(0.15 + 0.85 * heat, 0.0, 1.0)
    return np.round(np.dstack([rgb, alpha])).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The image with its coloured heatmap laid over it (``S x S x 3`` uint8); `opacity` is the
    heatmap's at full evidence."""
    rgba = heatmap_rgba(heatmap).astype(np.float64)
    weight = opacity * rgba[..., 3:] / 255.0
    return np.round(image * (1 - weight) + rgba[..., :3] * weight).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """An RGB or RGBA uint8 array encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "PNG")
    return buffer.getvalue()
