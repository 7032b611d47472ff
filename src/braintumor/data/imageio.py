"""Reading images from disk or memory into 8-bit RGB arrays, with one clear error per bad file."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from braintumor.data.dicom import DICOM_EXTENSIONS, is_dicom, iter_dicom_frames, read_dicom
from braintumor.data.nifti import is_nifti_bytes, is_nifti_file, read_nifti, read_nifti_bytes
from braintumor.errors import ImageError, UnsupportedImageError

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
    return _decode_pillow(path, str(path))


def _decode_pillow(source, name: str, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode an image with Pillow from a path or a binary file object (`name` in messages),
    refusing decompression bombs; `formats` limits the Pillow formats tried (None: all)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(
                        f"{name}: image too large to decode safely ({w}x{h} pixels, limit {MAX_PIXELS:,})",
                        "downscale the image before passing it in",
                    )
                if w == 0 or h == 0:
                    raise ImageError(f"{name}: image has zero size ({w}x{h})", "remove the file")
                img.load()
                return pil_to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: image too large to decode safely (over {MAX_PIXELS:,} pixels)",
            "downscale the image before passing it in",
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read", "check the file type") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageError(f"{name}: cannot decode image ({reason})", "re-export or remove the file") from None


def iter_frames(path: str | Path, frame: int | None = None, axis: int | None = None, volume: int | None = None
                ) -> Iterator[tuple[int | None, np.ndarray]]:
    """Every image in a file as ``(frame number or None, H x W x 3 uint8)``.

    A multi-frame DICOM file yields each of its frames (numbered from 1), or only `frame`; a
    NIfTI volume (``.nii``, ``.nii.gz``) each slice with enough brain along `axis` (numbered from
    1; see `braintumor.data.nifti.read_nifti`), or only slice `frame`, of its `volume`-th volume
    for a 4-D series; any other file yields one image with frame ``None``. Raises `ImageError`
    like `read_image`.
    """
    yield from load_frames(path, frame, axis, volume)[0]


def load_frames(path: str | Path, frame: int | None = None, axis: int | None = None, volume: int | None = None
                ) -> tuple[list[tuple[int | None, np.ndarray]], dict]:
    """`iter_frames` as a list, with what every record of the file should carry besides.

    Returns
    -------
    frames : list of (int or None, numpy.ndarray)
        As `iter_frames` yields them.
    extra : dict
        For a NIfTI volume ``{"axis": slice axis, "slices": slices along it, kept or not}``;
        empty for other files.
    """
    path = Path(path)
    if is_nifti_file(path):
        volume_slices = read_nifti(path, axis, volume, frame)
        return volume_slices.slices, {"axis": volume_slices.axis, "slices": volume_slices.count}
    if path.is_file() and path.stat().st_size > 0 and is_dicom(path):
        return list(iter_dicom_frames(path, frame, MAX_PIXELS)), {}
    return [(None, read_image(path))], {}


# Types read from bytes (`iter_frames_from_bytes`): the encoded format's name → its media type.
ENCODED_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff",
                 "DICOM": "application/dicom", "NIFTI": "application/x-nifti"}


def sniff_format(data: bytes) -> str | None:
    """The type of encoded image `data` from its first bytes (never from a file name).

    Returns
    -------
    str or None
        A key of `ENCODED_TYPES` (``"JPEG"``, ``"PNG"``, ``"BMP"``, ``"TIFF"``, ``"DICOM"``: a
        DICOM file with its 128-byte preamble and ``DICM`` marker; ``"NIFTI"``: a NIfTI-1/2
        volume, gzipped or not, `braintumor.data.nifti.is_nifti_bytes`), or None for anything else.
    """
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[128:132] == b"DICM":
        return "DICOM"
    if is_nifti_bytes(data):
        return "NIFTI"
    return None


def iter_frames_from_bytes(data: bytes, name: str = "upload", frame: int | None = None,
                           max_unpacked: int | None = None) -> Iterator[tuple[int | None, np.ndarray]]:
    """Every image in encoded bytes as ``(frame number or None, H x W x 3 uint8)``: what
    `iter_frames` gives for a file, for an upload held in memory (nothing touches the disk).

    The type is detected from the content (`sniff_format`), and only JPEG, PNG, BMP, TIFF,
    DICOM and NIfTI volumes are decoded, with the same decompression-bomb guards as files (a
    volume's slices along its axial axis, as `iter_frames` gives them).

    Parameters
    ----------
    data : bytes
        The encoded image.
    name : str
        Names the image in error messages.
    frame : int, optional
        Only this frame (from 1) of a multi-frame DICOM file, or slice of a NIfTI volume.
    max_unpacked : int, optional
        Refuse a NIfTI volume of more bytes than this once unpacked (default: the reader's limit).

    Raises
    ------
    UnsupportedImageError
        `data` is none of the types above (whatever its name says).
    ImageError
        The image cannot be decoded (truncated, corrupt, zero-sized, too large, ...).
    """
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImageError(f"{name}: not a JPEG, PNG, BMP, TIFF, DICOM or NIfTI image",
                                    "send one of these types; the type is read from the content, not the name")
    if kind == "DICOM":
        stream = io.BytesIO(data)
        stream.name = name
        yield from iter_dicom_frames(stream, frame, MAX_PIXELS)
        return
    if kind == "NIFTI":
        yield from read_nifti_bytes(data, name, frame=frame, max_unpacked=max_unpacked).slices
        return
    formats = ("JPEG", "MPO") if kind == "JPEG" else ("BMP", "DIB") if kind == "BMP" else (kind,)
    yield None, _decode_pillow(io.BytesIO(data), name, formats)
