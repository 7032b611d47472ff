"""Reading images from disk into 8-bit RGB arrays, with one clear error per bad file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from braintumor.data.dicom import DICOM_EXTENSIONS, is_dicom, iter_dicom_frames, read_dicom
from braintumor.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}) | DICOM_EXTENSIONS

# Pillow's own decompression-bomb limit (about 89 megapixels) applies; past it we refuse
# rather than warn, so a hostile or broken file cannot exhaust memory.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_file(path: str | Path) -> bool:
    """True when the file's extension is one that `read_image` accepts."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any range onto 0..255 by its min and max."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow image to an ``H x W x 3`` uint8 array.

    Grayscale is replicated to three channels, transparency is composited onto black (the
    background of an MRI slice), palette images are expanded, and 16-bit or float images are
    rescaled by their own range so that no detail is clipped.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Read an image file (JPEG, PNG, BMP, TIFF or DICOM) as an ``H x W x 3`` uint8 RGB array.

    Parameters
    ----------
    frame : int, optional
        Frame number (from 1) of a multi-frame DICOM file; ignored for single-frame images.

    Raises
    ------
    ImageError
        With the path and the reason when the file is missing, empty, not an image, truncated,
        zero-sized, or larger than the decompression-bomb limit (and see `braintumor.data.dicom`).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot open ({exc.strerror or exc})", "check the path") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)", "re-copy or remove the file")
    if is_dicom(path):
        return read_dicom(path, frame, MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: image too large to decode safely ({w}x{h} pixels, limit {MAX_PIXELS:,})",
                        "downscale the image before passing it in",
                    )
                if w == 0 or h == 0:
                    raise ImageError(f"{path}: image has zero size ({w}x{h})", "remove the file")
                img.load()
                return pil_to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{path}: image too large to decode safely (over {MAX_PIXELS:,} pixels)",
            "downscale the image before passing it in",
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read", "check the file type") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageError(f"{path}: cannot decode image ({reason})", "re-export or remove the file") from None


def iter_frames(path: str | Path, frame: int | None = None) -> Iterator[tuple[int | None, np.ndarray]]:
    """Every image in a file as ``(frame number or None, H x W x 3 uint8)``.

    A multi-frame DICOM file yields each of its frames (numbered from 1), or only `frame`;
    any other file yields one image with frame ``None``. Raises `ImageError` like `read_image`.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and is_dicom(path):
        yield from iter_dicom_frames(path, frame, MAX_PIXELS)
    else:
        yield None, read_image(path)
