"""Reading DICOM files (with pydicom) into the same 8-bit RGB arrays as every other image.

A grayscale frame goes through the standard display pipeline:

1. modality rescale: ``stored value * RescaleSlope + RescaleIntercept`` (CT Hounsfield units,
   scaled MR values);
2. window: ``WindowCenter`` / ``WindowWidth`` when present (the linear function of DICOM
   PS3.3 C.11.2.1.2), otherwise the frame's own min..max range;
3. ``MONOCHROME1`` (low values shown bright) is inverted, so that bright always means signal.

Slope, intercept and window are looked up per frame in enhanced multi-frame files (per-frame
functional groups, then shared functional groups, then the top level). Color images (RGB, YBR,
palette) are converted to RGB. Frames are numbered from 1, as DICOM's Frame Number is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from braintumor.errors import ImageError

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_PIXELS = 89_478_485  # the same decompression-bomb limit as Pillow's (see imageio)


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` file or any file with the ``DICM`` marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _open(source, path: str, max_pixels: int):
    """Read the dataset from `source` (a path or a binary file object; `path` names it in
    messages) and check that its pixel data can be decoded here."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError:
        raise ImageError(f"{path}: not a DICOM file (no DICOM header)", "check the file type") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageError(f"{path}: cannot read DICOM file ({exc or type(exc).__name__})", "re-export or remove the file") from None
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        raise ImageError(
            f"{path}: DICOM file holds no pixel data ({kind})",
            "pass the image files of a series, not reports, structured documents or presentation states",
        )
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows == 0 or cols == 0:
        raise ImageError(f"{path}: DICOM image has zero size ({cols}x{rows})", "remove the file")
    if rows * cols > max_pixels:
        raise ImageError(
            f"{path}: image too large to decode safely ({cols}x{rows} pixels, limit {max_pixels:,})",
            "downscale the image before passing it in",
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ImageError(
                f"{path}: compressed DICOM with a transfer syntax pydicom cannot decode ({syntax.name})",
                "convert the file to an uncompressed transfer syntax (e.g. `gdcmconv --raw` or `dcmdjpeg`)",
            ) from None
        if not decoder.is_available:
            raise ImageError(
                f"{path}: compressed DICOM ({syntax.name}) and no decoder for it is installed",
                "install one of: " + "; ".join(decoder.missing_dependencies),
            )
    return ds


def frame_count(ds) -> int:
    """Number of frames in a dataset (1 for a single-frame image)."""
    return max(1, int(ds.get("NumberOfFrames") or 1))


def _first(value) -> float:
    """A number from a possibly multi-valued element (the first value is the default view)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _frame_attribute(ds, index: int, sequence: str, keyword: str):
    """`keyword` for frame `index` (0-based): per-frame group, shared group, then top level."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and item < len(items):
            macro = items[item].get(sequence)
            if macro and keyword in macro[0]:
                return macro[0].get(keyword)
    return ds.get(keyword)


def _display_gray(arr: np.ndarray, ds, index: int) -> np.ndarray:
    """Rescale, window and (for MONOCHROME1) invert one grayscale frame into uint8."""
    slope = _frame_attribute(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_attribute(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    values = arr.astype(np.float64) * (_first(slope) if slope is not None else 1.0)
    values += _first(intercept) if intercept is not None else 0.0
    center = _frame_attribute(ds, index, "FrameVOILUTSequence", "WindowCenter")
    width = _frame_attribute(ds, index, "FrameVOILUTSequence", "WindowWidth")
    if center is not None and width is not None and _first(width) >= 1:
        c, w = _first(center), _first(width)
        # DICOM PS3.3 C.11.2.1.2.1: linear window, everything outside clipped to black or white.
        unit = np.clip((values - (c - 0.5)) / max(w - 1, 1.0) + 0.5, 0.0, 1.0)
    else:
        lo, hi = float(values.min()), float(values.max())
        unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    gray = np.round(unit * 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _to_rgb(arr: np.ndarray, ds, index: int) -> np.ndarray:
    """One decoded frame (``H x W`` or ``H x W x 3``) as ``H x W x 3`` uint8."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim == 2:
        gray = _display_gray(arr, ds, index)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        if arr.dtype == np.uint8:
            return np.ascontiguousarray(arr)
        lo, hi = float(arr.min()), float(arr.max())
        unit = (arr.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(arr.shape)
        return np.round(unit * 255).astype(np.uint8)
    raise ImageError(f"unsupported DICOM pixel layout {arr.shape} ({photometric})", "convert the file to grayscale or RGB")


def _source(source) -> tuple:
    """``(what pydicom reads, the name used in messages)`` of a path or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source), Path(source)
    return source, getattr(source, "name", None) or "DICOM data"


def _frames(source, frame: int | None, max_pixels: int, single: bool) -> Iterator[tuple[int | None, np.ndarray]]:
    from pydicom.pixels import iter_pixels

    source, path = _source(source)
    ds = _open(source, path, max_pixels)
    count = frame_count(ds)
    if frame is not None and not 1 <= frame <= count:
        raise ImageError(f"{path}: no frame {frame} (the file has {count} frame{'s' * (count > 1)})", f"choose a frame in 1..{count}")
    if single and frame is None and count > 1:
        raise ImageError(
            f"{path}: DICOM file has {count} frames; a single image was expected",
            "choose one with --frame N, or use `braintumor predict`, which predicts every frame",
        )
    indices = [frame - 1] if frame is not None else list(range(count))
    try:
        for index, arr in zip(indices, iter_pixels(ds, indices=indices)):
            yield (index + 1 if count > 1 else None), _to_rgb(arr, ds, index)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc.message}", exc.hint) from None
    except (ValueError, RuntimeError, NotImplementedError, OSError, AttributeError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{path}: cannot decode DICOM pixel data ({reason})", "re-export or remove the file") from None


def iter_dicom_frames(
    path, frame: int | None = None, max_pixels: int = MAX_PIXELS
) -> Iterator[tuple[int | None, np.ndarray]]:
    """Decode the frames of a DICOM file one at a time.

    Parameters
    ----------
    path : path or binary file object
        The DICOM file, or its bytes in a file object such as ``io.BytesIO`` (named in messages
        by its ``name`` attribute, if it has one).
    frame : int, optional
        Only this frame (numbered from 1); every frame by default.
    max_pixels : int
        Refuse frames with more pixels than this.

    Yields
    ------
    (int or None, numpy.ndarray)
        The frame number (from 1; None in a single-frame file) and the frame as an
        ``H x W x 3`` uint8 RGB array.

    Raises
    ------
    ImageError
        Not a DICOM file, no pixel data, a compressed transfer syntax without an installed
        decoder, zero or too large size, a frame number out of range, or undecodable data.
    """
    return _frames(path, frame, max_pixels, single=False)


def read_dicom(path: str | Path, frame: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one frame of a DICOM file as an ``H x W x 3`` uint8 RGB array.

    Parameters
    ----------
    frame : int, optional
        Frame number (from 1); required for a multi-frame file.

    Raises
    ------
    ImageError
        As `iter_dicom_frames`, and for a multi-frame file when `frame` is not given.
    """
    for _, rgb in _frames(path, frame, max_pixels, single=True):
        return rgb
    raise ImageError(f"{path}: DICOM file has no frames", "remove the file")
