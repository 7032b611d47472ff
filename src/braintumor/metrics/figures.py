"""Figures shared by reports: saving a figure atomically, a contact sheet of captioned thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from braintumor.files import atomic_write


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG, atomically (`braintumor.files.atomic_write`), and close it.

    Raises
    ------
    OutputError
        When the disk refuses it; `path` is then as it was.
    """
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
    finally:
        plt.close(fig)


def plot_thumbnails(images: list[np.ndarray], captions: list[str], path: str | Path, per_row: int = 8) -> None:
    """Save `images` (H x W x 3 uint8) as a grid of thumbnails, each titled with its caption.

    MRI slices and black captions need no colour: the PNG is 8-bit grayscale, a quarter of
    RGBA's size.
    """
    if len(images) != len(captions):
        raise ValueError(f"images and captions differ in length: {len(images)} and {len(captions)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.7 * per_row, 1.95 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=6)
    fig.tight_layout()
    fig.canvas.draw()
    sheet = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("L")
    plt.close(fig)
    atomic_write(path, lambda handle: sheet.save(handle, format="PNG", optimize=True))
