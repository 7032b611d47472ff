"""Reading NIfTI volumes (``.nii``, ``.nii.gz``, with nibabel) as 2-D slices for the 2-D model.

A volume becomes the same ``(frame number, H x W x 3 uint8)`` pairs that a multi-frame DICOM
file gives (`braintumor.data.imageio.iter_frames`), so that prediction and Grad-CAM treat its
slices as frames:

1. the volume is read (a 4-D series: one of its volumes, `volume`, from 1), its size checked
   from the header before any voxel is read;
2. the slice axis is the one the affine marks as superior-inferior (``aff2axcodes``: the axial
   slices), unless an axis 0, 1 or 2 of the array is given;
3. intensities are windowed to uint8 from the background level (the 0.5th percentile of the
   volume) to the 99.5th percentile of the brain voxels, those above 5% of the range from the
   minimum to the 99th percentile (the background of an MRI is dark): a few very bright voxels
   do not darken the rest;
4. each slice is turned to look like a radiological 2-D slice: anterior up in an axial slice
   (superior up in a coronal or sagittal one), the patient's right on the image's left
   (anterior on the left in a sagittal slice);
5. slices with too little brain (a foreground area under `min_brain` of the largest slice's)
   are skipped, and counted.

Slices are numbered from 1 along the slice axis (frame N is array index N - 1), as DICOM frames
are. nibabel is imported only when a volume is read.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintumor.errors import ImageError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MIN_BRAIN = 0.3  # skip a slice whose brain area is under this share of the largest slice's
MAX_VOXELS = 2**27  # one 3-D volume: 512 x 512 x 512 voxels (512 MiB as float32)
MAX_SIDE = 4096  # voxels along any axis
MIN_SIDE = 8  # a slice smaller than 8 x 8 is no image
MAX_DECOMPRESSED = 2**30  # bytes of a gzipped volume held in memory
_WINDOW = (0.5, 99.5)  # percentiles of the volume (0) and of its brain voxels (255)
_FOREGROUND = 0.05  # brain: above this share of the range from the minimum to the 99th percentile
_AXIS_PAIRS = {"L": "R", "R": "R", "A": "A", "P": "A", "S": "S", "I": "S"}  # code -> its axis' name


@dataclass
class VolumeSlices:
    """The slices of one volume, ready for the model.

    Attributes
    ----------
    name : str
        The file (or upload) name.
    axis : int
        The array axis the slices were taken along (0, 1 or 2).
    codes : tuple of str
        The orientation of the array's axes (``aff2axcodes``, e.g. ``("R", "A", "S")``).
    count : int
        Slices along `axis`, kept or not.
    slices : list of (int, numpy.ndarray)
        ``(slice number from 1, H x W x 3 uint8)`` of every slice kept.
    """

    name: str
    axis: int
    codes: tuple
    count: int
    slices: list = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Slices left out for too little brain."""
        return self.count - len(self.slices)


def is_nifti_file(path: str | Path) -> bool:
    """True for a file named ``*.nii`` or ``*.nii.gz`` (any case)."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """The file name without ``.nii``/``.nii.gz`` (``brain.nii.gz`` -> ``brain``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def is_nifti_bytes(data: bytes) -> bool:
    """Whether `data` is a NIfTI-1 or NIfTI-2 file, gzipped or not, told from its header: the
    header size (``sizeof_hdr`` 348 or 540, either byte order) and the NIfTI magic string."""
    head = data[:544]
    if data[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(data[:4096], 544)
        except zlib.error:
            return False
    return _header_version(head) is not None


def _header_version(head: bytes) -> int | None:
    """1 or 2 for the first bytes of a NIfTI-1 / NIfTI-2 header, else None."""
    if len(head) < 348:
        return None
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348 and head[344:347] in (b"n+1", b"ni1"):
            return 1
        if size == 540 and head[4:7] in (b"n+2", b"ni2"):
            return 2
    return None


def read_nifti(path: str | Path, axis: int | None = None, volume: int | None = None, frame: int | None = None,
               min_brain: float = MIN_BRAIN) -> VolumeSlices:
    """Read a ``.nii``/``.nii.gz`` file as slices for the model.

    Parameters
    ----------
    path : path
        The volume.
    axis : int, optional
        Take slices along this array axis (0, 1 or 2); default: the superior-inferior axis of
        the volume's orientation (axial slices).
    volume : int, optional
        Which volume (from 1) of a 4-D series; required when it holds more than one.
    frame : int, optional
        Only this slice (from 1), kept whatever its brain area.
    min_brain : float
        Skip slices whose brain area is under this share of the largest slice's (0 keeps all).

    Raises
    ------
    ImageError
        The file is not a readable NIfTI volume, is 2-D or more than 4-D, a 4-D series without
        `volume`, too large or too small, or `axis`, `volume` or `frame` is out of range.
    """
    import nibabel as nib

    name = str(path)
    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise ImageError(f"{name}: cannot open (no such file)", "check the path") from None
    except Exception as exc:  # nibabel raises many types for a broken header  # noqa: BLE001
        raise ImageError(f"{name}: not a readable NIfTI volume ({_reason(exc)})",
                         "check that the file is a complete .nii or .nii.gz volume") from None
    return volume_slices(image, name, axis, volume, frame, min_brain)


def read_nifti_bytes(data: bytes, name: str = "upload", axis: int | None = None, volume: int | None = None,
                     frame: int | None = None, min_brain: float = MIN_BRAIN,
                     max_unpacked: int | None = None) -> VolumeSlices:
    """`read_nifti` for a volume held in memory (gzipped or not; nothing touches the disk).
    A volume of more than `max_unpacked` bytes once unpacked (default `MAX_DECOMPRESSED`) is
    refused (a server sets it lower)."""
    import nibabel as nib

    max_unpacked = MAX_DECOMPRESSED if max_unpacked is None else max_unpacked
    raw = _gunzip(data, name, max_unpacked) if data[:2] == b"\x1f\x8b" else data
    if len(raw) > max_unpacked:
        raise ImageError(f"{name}: the volume is larger than {max_unpacked:,} bytes",
                         "crop or downsample the volume before sending it")
    version = _header_version(raw[:544])
    if version is None:
        raise ImageError(f"{name}: not a NIfTI-1 or NIfTI-2 volume", "send a .nii or .nii.gz file")
    kind = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    try:
        image = kind.from_bytes(raw)
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{name}: not a readable NIfTI volume ({_reason(exc)})",
                         "check that the file is a complete .nii or .nii.gz volume") from None
    return volume_slices(image, name, axis, volume, frame, min_brain)


def _gunzip(data: bytes, name: str, limit: int | None = None) -> bytes:
    """Unpack gzipped bytes, refusing more than `limit` (default `MAX_DECOMPRESSED`) of them (a zip bomb)."""
    limit = MAX_DECOMPRESSED if limit is None else limit
    unpacker = zlib.decompressobj(wbits=31)
    try:
        raw = unpacker.decompress(data, limit)
    except zlib.error as exc:
        raise ImageError(f"{name}: corrupt gzip data ({exc})", "re-compress or re-copy the volume") from None
    if unpacker.unconsumed_tail:
        raise ImageError(f"{name}: the volume unpacks to more than {limit:,} bytes",
                         "crop or downsample the volume before sending it")
    return raw


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def volume_slices(image, name: str, axis: int | None = None, volume: int | None = None, frame: int | None = None,
                  min_brain: float = MIN_BRAIN) -> VolumeSlices:
    """The kept slices of a nibabel image (see `read_nifti` for the parameters and errors)."""
    shape = _checked_shape(tuple(int(n) for n in image.shape), name, volume)
    codes = _axis_codes(image)
    axis = _slice_axis(codes, axis, name)
    data = _read_voxels(image, name, volume)
    data = np.nan_to_num(data.reshape(shape[:3]), nan=0.0, posinf=0.0, neginf=0.0)
    if frame is not None and not 1 <= frame <= shape[axis]:
        raise ImageError(f"{name}: slice {frame} is out of range (1..{shape[axis]} along axis {axis})",
                         "choose a slice number (--frame) within that range")
    mask = foreground(data)
    scaled = window_uint8(data, mask)
    area = mask.sum(axis=tuple(i for i in range(3) if i != axis))
    wanted = [frame - 1] if frame is not None else kept_slices(area, min_brain)
    if not wanted:
        raise ImageError(f"{name}: the volume holds no brain (every voxel is background)",
                         "check that the file holds an image, not a mask of zeros")
    slices = [(k + 1, _gray_to_rgb(orient_slice(np.take(scaled, k, axis=axis), codes, axis))) for k in wanted]
    return VolumeSlices(name, axis, codes, shape[axis], slices)


def _checked_shape(shape: tuple, name: str, volume: int | None) -> tuple:
    """The volume's shape with trailing length-1 axes beyond the third dropped, checked."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise ImageError(f"{name}: a {len(shape)}-D image ({' x '.join(map(str, shape))}), not a volume",
                         "save a 2-D slice as PNG or DICOM, or pass a 3-D volume")
    if len(shape) > 4:
        raise ImageError(f"{name}: a {len(shape)}-D array ({' x '.join(map(str, shape))}); braintumor reads 3-D "
                         "volumes and 4-D series", "save the volume you want as a 3-D NIfTI file")
    series = shape[3] if len(shape) == 4 else 1
    if len(shape) == 4 and volume is None:
        raise ImageError(f"{name}: a 4-D series of {series} volumes ({' x '.join(map(str, shape))})",
                         f"choose one with --volume N (1..{series})")
    if volume is not None and not 1 <= volume <= series:
        raise ImageError(f"{name}: volume {volume} is out of range (the file holds {series})",
                         f"choose --volume within 1..{series}")
    side = shape[:3]
    if max(side) > MAX_SIDE or int(np.prod(side, dtype=np.int64)) > MAX_VOXELS:
        raise ImageError(f"{name}: volume too large to read safely ({' x '.join(map(str, side))} voxels; limits "
                         f"{MAX_SIDE} per axis, {MAX_VOXELS:,} in all)", "crop or downsample the volume")
    if sorted(side)[1] < MIN_SIDE:
        raise ImageError(f"{name}: volume too small for image slices ({' x '.join(map(str, side))} voxels)",
                         f"slices need at least {MIN_SIDE} x {MIN_SIDE} voxels")
    return shape


def _axis_codes(image) -> tuple:
    """The orientation codes of the array's three axes (``aff2axcodes`` of the affine);
    ``("?", "?", "?")`` when the header names no orientation (qform and sform codes 0: nibabel
    then makes up an affine) or the affine is degenerate."""
    import nibabel as nib

    header = image.header
    if all(int(header.get(key, 0) or 0) == 0 for key in ("qform_code", "sform_code")):
        return ("?", "?", "?")
    try:
        codes = tuple(nib.aff2axcodes(np.asarray(image.affine, dtype=np.float64)))
    except Exception:  # noqa: BLE001 - a singular or non-finite affine: no orientation
        return ("?", "?", "?")
    return tuple(c if c in _AXIS_PAIRS else "?" for c in codes)


def axial_axis(codes: tuple) -> int | None:
    """The array axis whose orientation code is superior or inferior, else None."""
    found = [i for i, c in enumerate(codes) if c in ("S", "I")]
    return found[0] if found else None


def _slice_axis(codes: tuple, axis: int | None, name: str) -> int:
    """`axis` checked, or the axial one of `codes`."""
    if axis is not None:
        if axis not in (0, 1, 2):
            raise ImageError(f"slice axis must be 0, 1 or 2, got {axis!r}", "pass --axis 0, 1 or 2")
        return axis
    found = axial_axis(codes)
    if found is None:
        raise ImageError(f"{name}: the volume's orientation does not say which axis is axial (affine codes "
                         f"{''.join(codes)})", "choose the slice axis with --axis 0, 1 or 2")
    return found


def _read_voxels(image, name: str, volume: int | None) -> np.ndarray:
    """The voxels of the chosen 3-D volume as float32 (one volume of a series only is read)."""
    try:
        proxy = image.dataobj
        if len(image.shape) > 3 and volume is not None:
            index = (slice(None),) * 3 + (volume - 1,) + (0,) * (len(image.shape) - 4)
            return np.asarray(proxy[index], dtype=np.float32)
        return np.asarray(proxy, dtype=np.float32)
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to read the volume", "crop or downsample it") from None
    except Exception as exc:  # noqa: BLE001 - truncated data, bad gzip stream, ...
        raise ImageError(f"{name}: cannot read the volume's voxels ({_reason(exc)})",
                         "the file is probably truncated; re-copy or re-export it") from None


def foreground(data: np.ndarray) -> np.ndarray:
    """The brain (head) voxels: above 5% of the range from the volume's minimum to its 99th
    percentile. MRI background is dark, so this also ignores noise around the head."""
    low = float(data.min())
    high = float(np.percentile(data, 99))
    if high <= low:
        return np.zeros(data.shape, dtype=bool)
    return data > low + _FOREGROUND * (high - low)


def window_uint8(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale a volume to uint8: the background level (0.5th percentile of every voxel) to 0, the
    99.5th percentile of the brain voxels (`mask`) to 255. A few very bright voxels (vessels,
    artefacts) do not darken the rest, and the darkest brain tissue stays above the background."""
    low = float(np.percentile(data, _WINDOW[0]))
    high = float(np.percentile(data[mask] if mask.any() else data, _WINDOW[1]))
    if high <= low:
        high = low + 1.0
    scaled = (data - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def kept_slices(area: np.ndarray, min_brain: float) -> list[int]:
    """Indices of the slices whose brain area (`area`, voxels per slice) reaches `min_brain`
    of the largest slice's; none when the volume holds no brain at all."""
    largest = int(area.max()) if area.size else 0
    if largest == 0:
        return []
    return [int(k) for k in np.flatnonzero(area >= max(min_brain * largest, 1))]


def orient_slice(plane: np.ndarray, codes: tuple, axis: int) -> np.ndarray:
    """Turn a slice (its two axes in array order) the way radiological slices are shown.

    Rows run from superior (top) to inferior when the plane holds the S-I axis, else from
    anterior (top) to posterior; columns run from the patient's right (left of the image) to
    left, or, in a sagittal plane, from anterior to posterior. Axes of unknown orientation are
    left as they are.
    """
    first, second = (i for i in range(3) if i != axis)
    kinds = {_AXIS_PAIRS.get(codes[first]), _AXIS_PAIRS.get(codes[second])}
    row_kind = "S" if "S" in kinds else "A" if "A" in kinds else None
    if row_kind is not None and _AXIS_PAIRS.get(codes[second]) == row_kind and _AXIS_PAIRS.get(codes[first]) != row_kind:
        plane, (first, second) = plane.T, (second, first)  # the row axis first
    if codes[first] in ("S", "A") and row_kind is not None:
        plane = plane[::-1, :]  # indices grow towards the top of the image: reverse the rows
    column_top = {"R": "R", "A": "A"}.get(_AXIS_PAIRS.get(codes[second]))
    if column_top is not None and codes[second] == column_top:
        plane = plane[:, ::-1]  # indices grow towards the image's left: reverse the columns
    return np.ascontiguousarray(plane)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


__all__ = ["VolumeSlices", "is_nifti_file", "is_nifti_bytes", "read_nifti", "read_nifti_bytes", "nifti_stem",
           "axial_axis", "foreground", "window_uint8", "kept_slices", "orient_slice", "MIN_BRAIN"]
