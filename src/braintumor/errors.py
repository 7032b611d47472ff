"""Errors that the command line turns into one clear message and a non-zero exit code."""

from __future__ import annotations


class BrainTumorError(Exception):
    """An expected failure caused by the user's input or environment.

    Parameters
    ----------
    message : str
        What is wrong.
    hint : str, optional
        What to do about it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class DataError(BrainTumorError):
    """The dataset is missing, empty or laid out wrongly."""


class ImageError(BrainTumorError):
    """One image cannot be read (corrupt, truncated, too large, not an image)."""

    exit_code = 3


class CheckpointError(BrainTumorError):
    """A file is not a braintumor checkpoint, or one this version cannot read."""


class UnsupportedImageError(ImageError):
    """Data that is not of an image type braintumor reads (told from the content)."""
