"""Two small collections of generated slices, the second holding near copies of some of the
first's images (as Masoud's collection copies Sartaj's), for the multi-collection tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from planted import CLASS_FOLDERS, distinct_slice, save_png

# The second collection spells its class folders as Masoud's does.
OTHER_FOLDERS = ("glioma", "meningioma", "notumor", "pituitary")


def make_two_collections(root: Path, per_class: int = 6, copies_per_class: int = 2, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """``root/first/{Training,Testing}/<class>/`` and ``root/second/Training/<class>/``.

    The second holds `per_class` distinct images per class plus `copies_per_class` near copies
    (JPEG, 0.8x size) of the first's Training images of the same class.

    Returns the two folders and the copies' paths relative to the second.
    """
    rng = np.random.default_rng(seed)
    first, second = root / "first", root / "second" / "Training"
    originals = {}
    for split, n in (("Training", per_class), ("Testing", 2)):
        for folder in CLASS_FOLDERS:
            for i in range(n):
                originals[f"{split}/{folder}/img {i}.png"] = image = distinct_slice(rng, 96)
                save_png(image, first / split / folder / f"img {i}.png")
    copies = []
    for k, (folder, other) in enumerate(zip(CLASS_FOLDERS, OTHER_FOLDERS)):
        for i in range(per_class):
            save_png(distinct_slice(rng, 96), second / other / f"Tr-{k}_{i:04d}.png")
        for i in range(copies_per_class):
            small = Image.fromarray(originals[f"Training/{folder}/img {i}.png"]).resize((77, 77), Image.BILINEAR)
            rel = f"{other}/copy-{i}.jpg"
            small.save(second / rel, quality=85)
            copies.append(rel)
    return first, second, copies
