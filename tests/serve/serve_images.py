"""Encoded test images for the server's tests (generated, never real scans)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from synthetic import tumor_slice


def slice_rgb(label: int = 0, size: int = 128, seed: int = 0) -> np.ndarray:
    """A slice-like image the tiny test model knows (see `synthetic.tumor_slice`)."""
    return tumor_slice(label, np.random.default_rng(seed), size)


def encode(rgb: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **params)
    return buffer.getvalue()


def tiff16(gray: np.ndarray) -> bytes:
    """A 16-bit grayscale TIFF."""
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16)).save(buffer, "TIFF")
    return buffer.getvalue()


def dicom_bytes(tmp_path, frames: np.ndarray) -> bytes:
    """A DICOM file of `frames` (rows x cols, or frames x rows x cols uint8) as bytes."""
    from dicomfiles import write_dicom

    path = tmp_path / "upload.dcm"
    attributes = {"NumberOfFrames": len(frames)} if frames.ndim == 3 else {}
    write_dicom(path, frames, **attributes)
    return path.read_bytes()


def png_bomb(side: int = 20_000) -> bytes:
    """A tiny PNG whose header claims ``side x side`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))
