"""Generated test data: fake MRI slices, ImageFolder trees and a tiny trained model.

Imported by tests as ``from synthetic import ...`` (a plain module, so it does not clash with the
``conftest`` of a test subfolder)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def synthetic_slice(label: int, rng: np.random.Generator, size: int = 48, blob: bool = True) -> np.ndarray:
    """A fake 'slice': a dark background, a gray disc (the head) and a bright blob whose
    quadrant encodes the class, so a tiny model can learn it (no blob with ``blob=False``)."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    img = np.zeros((size, size), dtype=np.float64)
    img[(yy - c) ** 2 + (xx - c) ** 2 < (0.42 * size) ** 2] = 90
    qy, qx = divmod(label, 2)
    by, bx = (0.3 + 0.4 * qy) * size, (0.3 + 0.4 * qx) * size
    if blob:
        img[(yy - by) ** 2 + (xx - bx) ** 2 < (0.1 * size) ** 2] = 250
    img += rng.normal(0, 8, img.shape)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def make_tree(root: Path, per_class: int = 6, splits: tuple[str, ...] = ("Training", "Testing"), size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, folder in enumerate(CLASS_FOLDERS):
            d = root / split / folder if split else root / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(synthetic_slice(label, rng, size)).save(d / f"img ({i}).jpg", quality=95)
    return root


def tumor_slice(label: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A synthetic slice for the tiny trained model: the tumor classes (glioma, meningioma,
    pituitary) have the bright blob in quadrant 0, 1 or 3; ``no_tumor`` (2) has none. Without a
    blob-free class a network could recognise a class by where the blob is *not*."""
    return synthetic_slice(label, rng, size, blob=label != 2)


def _train_tiny_quadrant_model(out: Path, size: int = 128, steps: int = 30) -> Path:
    """Train timm's ``test_efficientnet`` for a few seconds on `tumor_slice` images (no flips:
    the class is the quadrant), fit its out-of-distribution statistics and save a checkpoint."""
    import torch

    from braintumor.model.factory import to_float
    from braintumor.model.checkpoint import ModelInfo, save_checkpoint
    from braintumor.data.classes import CLASSES
    from braintumor.model.factory import create_model
    from braintumor.inference.ood import fit_model_ood
    from braintumor.data.preprocess import Preprocess

    def as_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:  # the files tests write are often JPEGs
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    torch.manual_seed(0)
    preprocess = Preprocess(image_size=size)
    rng = np.random.default_rng(0)
    labels = np.arange(160) % 4
    quality = lambda: int(rng.integers(75, 101))  # noqa: E731
    images = np.stack([preprocess(as_jpeg(tumor_slice(int(label), rng, size), quality())) for label in labels])
    val_images = np.stack([preprocess(as_jpeg(tumor_slice(label % 4, rng, size), quality())) for label in range(40)])
    model = create_model("test_efficientnet", len(CLASSES), preprocess, pretrained=False, drop_rate=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = to_float(torch.from_numpy(images)), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    info = ModelInfo(classes=list(CLASSES), backbone="test_efficientnet", preprocess=preprocess, drop_rate=0.0)
    fit_model_ood(model, info, images, labels, val_images)
    return save_checkpoint(out / "model.safetensors", model, info)


def perturbed_copy(checkpoint: Path, path: Path, seed: int = 1) -> Path:
    """The checkpoint with noise on every weight, saved to `path`: another network with the same
    inputs, classes and detector, for ensembles."""
    import torch

    from braintumor.model.checkpoint import load_checkpoint, save_checkpoint

    model, info = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * param.std().nan_to_num() * torch.randn(param.shape, generator=generator))
    return save_checkpoint(path, model, info)
