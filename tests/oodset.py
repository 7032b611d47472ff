"""A set of images that are not brain MRI slices, for testing out-of-distribution rejection.

Photographs and scientific images that scikit-image ships (no download), plus generated images:
blank, noise, gradients, checkerboards, text, rendered document pages, natural-image-like 1/f
textures, and rough imitations of other modalities and body regions (a chest X-ray, an abdominal
CT slice, an ultrasound sector, a hand X-ray). The brain images that
scikit-image can download (``data.brain``) are deliberately not used.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# scikit-image data functions whose files ship with the package.
SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins", "grass",
    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
    "retina", "rocket", "text", "shepp_logan_phantom",
)


def _rgb(arr: np.ndarray) -> np.ndarray:
    """Any 2-D or 3-D array (bool, float in [0, 1], uint8, RGBA) → ``H x W x 3`` uint8."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(np.asarray(arr, dtype=np.float64), 0, 1)
        arr = np.round(arr * 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def skimage_photos() -> list[tuple[str, np.ndarray]]:
    """The bundled scikit-image images as ``(name, H x W x 3 uint8)``."""
    from skimage import data

    out = []
    for name in SKIMAGE_IMAGES:
        try:
            out.append((f"skimage-{name}", _rgb(getattr(data, name)())))
        except Exception:  # noqa: BLE001 - a data file missing from this installation is skipped
            continue
    return out


def _ellipse_mask(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def chest_xray(size: int, rng: np.random.Generator) -> np.ndarray:
    """A frontal chest X-ray imitation: bright body, dark lungs, spine, ribs, clavicles."""
    img = Image.new("L", (size, size), 15)
    draw = ImageDraw.Draw(img)
    s = size
    draw.rectangle([0.1 * s, 0.05 * s, 0.9 * s, s], fill=170)
    for cx in (0.32, 0.68):
        draw.ellipse([(cx - 0.16) * s, 0.18 * s, (cx + 0.16) * s, 0.85 * s], fill=55)
    draw.rectangle([0.47 * s, 0.05 * s, 0.53 * s, s], fill=210)
    for i in range(9):
        y = (0.22 + 0.07 * i) * s
        draw.arc([0.14 * s, y - 0.05 * s, 0.5 * s, y + 0.12 * s], 180, 330, fill=200, width=max(1, s // 90))
        draw.arc([0.5 * s, y - 0.05 * s, 0.86 * s, y + 0.12 * s], 210, 360, fill=200, width=max(1, s // 90))
    draw.line([0.15 * s, 0.16 * s, 0.47 * s, 0.2 * s], fill=220, width=max(1, s // 60))
    draw.line([0.53 * s, 0.2 * s, 0.85 * s, 0.16 * s], fill=220, width=max(1, s // 60))
    draw.ellipse([0.45 * s, 0.45 * s, 0.66 * s, 0.75 * s], fill=150)  # heart shadow
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(s / 120)), dtype=np.float64)
    return _rgb((arr + rng.normal(0, 6, arr.shape)) / 255)


def abdominal_ct(size: int, rng: np.random.Generator) -> np.ndarray:
    """An axial abdominal CT imitation: a wide body ellipse, organs, a bright vertebra."""
    img = np.zeros((size, size))
    img[_ellipse_mask(size, 0.55, 0.5, 0.3, 0.45)] = 0.45
    img[_ellipse_mask(size, 0.5, 0.3, 0.14, 0.12)] = 0.55  # liver
    img[_ellipse_mask(size, 0.55, 0.7, 0.07, 0.06)] = 0.5  # kidney
    img[_ellipse_mask(size, 0.55, 0.3, 0.07, 0.06)] = 0.5
    img[_ellipse_mask(size, 0.72, 0.5, 0.06, 0.06)] = 0.95  # vertebra
    img[_ellipse_mask(size, 0.45, 0.55, 0.06, 0.1)] = 0.05  # gas in the bowel
    img[~_ellipse_mask(size, 0.55, 0.5, 0.34, 0.49) & _ellipse_mask(size, 0.55, 0.5, 0.36, 0.5)] = 0.7  # table/skin
    return _rgb(img + rng.normal(0, 0.03, img.shape))


def ultrasound(size: int, rng: np.random.Generator) -> np.ndarray:
    """An ultrasound imitation: a fan-shaped sector of speckle on black."""
    yy, xx = np.mgrid[:size, :size] / size
    r = np.hypot(yy + 0.05, xx - 0.5)
    angle = np.arctan2(xx - 0.5, yy + 0.05)
    sector = (r < 0.95) & (np.abs(angle) < 0.6)
    speckle = rng.rayleigh(0.25, (size, size)) * (0.6 + 0.4 * np.sin(8 * r))
    speckle[_ellipse_mask(size, 0.55, 0.5, 0.12, 0.18)] *= 0.2  # a dark cyst
    return _rgb(np.where(sector, speckle, 0))


def hand_xray(size: int, rng: np.random.Generator) -> np.ndarray:
    """A hand X-ray imitation: bright finger bones on a gray soft-tissue silhouette."""
    img = Image.new("L", (size, size), 10)
    draw = ImageDraw.Draw(img)
    s = size
    draw.ellipse([0.25 * s, 0.5 * s, 0.75 * s, 0.98 * s], fill=90)
    for k, x in enumerate((0.22, 0.36, 0.5, 0.64, 0.8)):
        top = 0.12 + 0.05 * abs(k - 2)
        draw.rounded_rectangle([(x - 0.05) * s, top * s, (x + 0.05) * s, 0.7 * s], radius=s // 30, fill=90)
        for j in range(3):
            y0 = top + 0.04 + j * 0.17
            draw.rounded_rectangle([(x - 0.025) * s, y0 * s, (x + 0.025) * s, (y0 + 0.14) * s], radius=s // 60, fill=200)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(s / 200)), dtype=np.float64)
    return _rgb((arr + rng.normal(0, 5, arr.shape)) / 255)


def text_image(size: int, rng: np.random.Generator, dark: bool = False) -> np.ndarray:
    """Lines of text, black on white (or white on black)."""
    img = Image.new("L", (size, size), 0 if dark else 255)
    draw = ImageDraw.Draw(img)
    words = ["patient", "report", "glioma", "scan", "date", "result", "normal", "lorem", "ipsum", "MRI"]
    for row in range(2, size - 10, 14):
        line = " ".join(rng.choice(words, 6))
        draw.text((4, row), line, fill=255 if dark else 0)
    return _rgb(np.asarray(img))


def document_page(size: int, rng: np.random.Generator) -> np.ndarray:
    """A rendered document: a title, paragraphs of small text, a ruled table and a margin."""
    img = Image.new("L", (size, size), 245)
    draw = ImageDraw.Draw(img)
    m = size // 12
    draw.rectangle([m, m, size - m, m + size // 14], fill=60)  # a title bar
    y = m + size // 10
    while y < size * 0.55:
        width = rng.uniform(0.5, 1.0) * (size - 2 * m)
        for x in range(m, int(m + width), 7):  # words as small dark strokes
            if rng.random() < 0.85:
                draw.rectangle([x, y, x + rng.integers(3, 6), y + 3], fill=int(rng.integers(20, 80)))
        y += 7 + (8 if rng.random() < 0.15 else 0)
    rows, cols = 5, 4
    top, bottom = size * 0.62, size - m
    for r in range(rows + 1):
        ry = top + r * (bottom - top) / rows
        draw.line([m, ry, size - m, ry], fill=40)
    for c in range(cols + 1):
        cx = m + c * (size - 2 * m) / cols
        draw.line([cx, top, cx, bottom], fill=40)
    return _rgb(np.asarray(img))


def natural_texture(size: int, rng: np.random.Generator, color: bool = False) -> np.ndarray:
    """Noise with a steep power-law spectrum, as natural scenes have (clouds, bark, foliage-like)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0

    def channel() -> np.ndarray:
        spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius**1.5
        field = np.real(np.fft.ifft2(spectrum))
        return (field - field.min()) / (np.ptp(field) + 1e-12)

    if color:
        return _rgb(np.stack([channel(), channel(), channel()], axis=2))
    return _rgb(channel())


def generated_images(size: int = 256, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Blank, noise, gradient, checkerboard, text and other-modality-like images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    out: list[tuple[str, np.ndarray]] = [
        ("blank-black", _rgb(np.zeros((size, size)))),
        ("blank-white", _rgb(np.ones((size, size)))),
        ("blank-gray", _rgb(np.full((size, size), 0.5))),
        ("blank-red", np.tile(np.array([200, 30, 30], np.uint8), (size, size, 1))),
        ("gradient-horizontal", _rgb(xx)),
        ("gradient-vertical", _rgb(yy)),
        ("gradient-radial", _rgb(1 - np.clip(np.hypot(yy - 0.5, xx - 0.5) * 1.6, 0, 1))),
        ("gradient-color", _rgb(np.stack([xx, yy, 1 - xx], axis=2))),
        ("checkerboard", _rgb(((yy * 8).astype(int) + (xx * 8).astype(int)) % 2 == 0)),
        ("stripes", _rgb(0.5 + 0.5 * np.sin(xx * 40))),
    ]
    for i in range(3):
        out.append((f"noise-uniform-{i}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        out.append((f"noise-gaussian-{i}", _rgb(rng.normal(0.5, 0.15, (size, size)))))
        out.append((f"noise-salt-pepper-{i}", _rgb(rng.random((size, size)) < 0.1)))
        out.append((f"noise-smooth-{i}", _rgb(np.asarray(
            Image.fromarray(rng.integers(0, 256, (size // 16, size // 16), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        ) / 255)))
        out.append((f"text-{i}", text_image(size, rng, dark=bool(i % 2))))
        out.append((f"chest-xray-{i}", chest_xray(size, rng)))
        out.append((f"abdominal-ct-{i}", abdominal_ct(size, rng)))
        out.append((f"ultrasound-{i}", ultrasound(size, rng)))
        out.append((f"hand-xray-{i}", hand_xray(size, rng)))
        out.append((f"document-{i}", document_page(size, rng)))
        out.append((f"texture-gray-{i}", natural_texture(size, rng)))
        out.append((f"texture-color-{i}", natural_texture(size, rng, color=True)))
    return out


def ood_images(size: int = 256, seed: int = 0, photos: bool = True) -> list[tuple[str, np.ndarray]]:
    """The whole out-of-distribution set as ``(name, H x W x 3 uint8)`` pairs."""
    return (skimage_photos() if photos else []) + generated_images(size, seed)
