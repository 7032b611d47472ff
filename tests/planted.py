"""Generated images with planted duplicates, for the duplicate-finding, audit, protocol and
comparison tests (never the real dataset).

`distinct_slice` draws a head-like image (a textured disc with random blobs on a black
background): two calls give clearly different images. `COPIES` are the edits that make a
near-duplicate: re-encoding, resizing, slight cropping and brightness changes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

CLASS_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def distinct_slice(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """An ``size x size x 3`` uint8 'slice' unlike any other drawn from another state of `rng`."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    center = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    radius = rng.uniform(0.3, 0.38, 2) * size
    draw.ellipse([*(center - radius), *(center + radius)], fill=int(rng.integers(70, 130)))
    for _ in range(6):
        spot = center + rng.uniform(-0.25, 0.25, 2) * size
        r = rng.uniform(0.03, 0.12, 2) * size
        draw.ellipse([*(spot - r), *(spot + r)], fill=int(rng.integers(20, 255)))
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    texture = np.asarray(Image.fromarray(rng.normal(0, 1, (12, 12))).resize((size, size), Image.BICUBIC))
    head = np.asarray(img) > 10
    arr = np.asarray(img, dtype=np.float64) + 30 * texture * head + rng.normal(0, 3, (size, size))
    gray = np.clip(arr, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def jpeg_roundtrip(rgb: np.ndarray, quality: int = 50) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BICUBIC))


def _crop(rgb: np.ndarray, top: float, bottom: float, left: float, right: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[int(top * h) : h - int(bottom * h), int(left * w) : w - int(right * w)]


def _brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(rgb)).enhance(factor))


COPIES = {
    "jpeg q50": lambda a: jpeg_roundtrip(a, 50),
    "half size": lambda a: _resize(a, 0.5),
    "1.5x size": lambda a: _resize(a, 1.5),
    "crop 4% each side": lambda a: _crop(a, 0.04, 0.04, 0.04, 0.04),
    "crop 6% left": lambda a: _crop(a, 0, 0, 0.06, 0),
    "brighter 20%": lambda a: _brightness(a, 1.2),
    "darker 20%": lambda a: _brightness(a, 0.8),
    "resize + crop + jpeg": lambda a: jpeg_roundtrip(_crop(_resize(a, 0.8), 0.03, 0.03, 0.03, 0.03), 70),
}


def save_png(rgb: np.ndarray, path: Path, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "PNG", **params)
    return path


def make_planted_tree(root: Path, per_class: int = 6, seed: int = 0) -> tuple[Path, dict]:
    """A Training/Testing tree of distinct PNG slices plus planted copies of some of them.

    Planted (``Testing`` holds 2 distinct images per class):

    - a byte-identical copy of a Training glioma image, in Testing (crosses splits);
    - a pixel-identical but not byte-identical copy (PNG with other compression) of a Training
      meningioma image, in Training;
    - a near copy (JPEG, 0.8x size) of a Training no_tumor image, in Testing;
    - the same pituitary image filed under no_tumor as well: a label conflict.

    Returns the root and a dict naming the planted files (paths relative to `root`).
    """
    rng = np.random.default_rng(seed)
    originals: dict[str, np.ndarray] = {}
    for split, n in (("Training", per_class), ("Testing", 2)):
        for folder in CLASS_FOLDERS:
            for i in range(n):
                rel = f"{split}/{folder}/img {i}.png"
                originals[rel] = distinct_slice(rng, 96)
                save_png(originals[rel], root / rel)
    planted = {
        "byte": ("Training/glioma_tumor/img 0.png", "Testing/glioma_tumor/copy.png"),
        "pixel": ("Training/meningioma_tumor/img 0.png", "Training/meningioma_tumor/recompressed.png"),
        "near": ("Training/no_tumor/img 0.png", "Testing/no_tumor/near.jpg"),
        "conflict": ("Training/pituitary_tumor/img 0.png", "Training/no_tumor/relabelled.png"),
    }
    (root / planted["byte"][1]).write_bytes((root / planted["byte"][0]).read_bytes())
    save_png(originals[planted["pixel"][0]], root / planted["pixel"][1], compress_level=1)
    Image.fromarray(_resize(originals[planted["near"][0]], 0.8)).save(root / planted["near"][1], quality=80)
    (root / planted["conflict"][1]).write_bytes((root / planted["conflict"][0]).read_bytes())
    return root, planted
