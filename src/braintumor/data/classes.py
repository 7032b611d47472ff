"""Canonical class names and the folder spellings that map onto them."""

from __future__ import annotations

import re

from braintumor.errors import DataError

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")

# Folder names seen in public brain-MRI datasets, normalised by `_normalise`.
_ALIASES: dict[str, str] = {
    "glioma": "glioma",
    "gliomatumor": "glioma",
    "gliomatumour": "glioma",
    "meningioma": "meningioma",
    "meningiomatumor": "meningioma",
    "meningiomatumour": "meningioma",
    "notumor": "no_tumor",
    "notumour": "no_tumor",
    "no": "no_tumor",
    "healthy": "no_tumor",
    "normal": "no_tumor",
    "pituitary": "pituitary",
    "pituitarytumor": "pituitary",
    "pituitarytumour": "pituitary",
}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def parse_class_map(spec: str | None) -> dict[str, str]:
    """Parse ``"folder=class,folder2=class2"`` into a dict, validating class names."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise DataError(
                f"--class-map entry {item!r} is not of the form FOLDER=CLASS",
                f"write e.g. --class-map 'tumor_g=glioma,healthy_brain=no_tumor'; classes: {', '.join(CLASSES)}",
            )
        folder, cls = (part.strip() for part in item.split("=", 1))
        if cls not in CLASSES:
            raise DataError(
                f"--class-map maps {folder!r} to unknown class {cls!r}",
                f"use one of: {', '.join(CLASSES)}",
            )
        mapping[folder] = cls
    return mapping


def canonical_class(folder: str, class_map: dict[str, str] | None = None) -> str:
    """Return the canonical class for a folder name, or raise `DataError` naming the folder.

    Parameters
    ----------
    folder : str
        A class folder's name, e.g. ``"glioma_tumor"`` or ``"notumor"``.
    class_map : dict, optional
        Extra ``{folder: class}`` entries that take precedence over the built-in spellings.
    """
    if class_map and folder in class_map:
        return class_map[folder]
    key = _normalise(folder)
    if key in _ALIASES:
        return _ALIASES[key]
    raise DataError(
        f"unknown class folder {folder!r}",
        f"accepted folder names map onto {', '.join(CLASSES)} (e.g. glioma_tumor, meningioma, "
        "notumor, no_tumor, pituitary_tumor); for other names pass --class-map FOLDER=CLASS",
    )
