"""Inference: probabilities for arrays of preprocessed images, and a `Predictor` for files."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .augment import to_float
from .errors import BrainTumorError, ImageError
from .imageio import is_image_file, read_image

DEFAULT_MODEL = Path(__file__).parent / "weights" / "default.safetensors"


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    tta: bool = False,
    bf16: bool = False,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities for preprocessed ``N x S x S x 3`` uint8 images.

    Parameters
    ----------
    tta : bool
        Average the logits of each image and its horizontal mirror.
    bf16 : bool
        Run in bfloat16 autocast (faster on CPUs with AVX-512 BF16; used during training).
    temperature : float
        Divide logits by this before the softmax (calibration, see issue on calibration).
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if tta:  # one forward pass over the images and their mirrors
                both = model(torch.cat([x, torch.flip(x, dims=[3])])).float()
                logits = (both[: len(x)] + both[len(x) :]) / 2
            else:
                logits = model(x).float()
        out.append(torch.softmax(logits / temperature, dim=1).numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float64)


@dataclass
class Prediction:
    """The result for one file: its class and every class's probability, or an error."""

    path: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[Prediction]]:
    """Expand files and folders (recursively) into image paths; missing paths become errors."""
    files: list[Path] = []
    errors: list[Prediction] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))
            if not found:
                errors.append(Prediction(str(path), error="folder holds no JPEG/PNG/BMP/TIFF images"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(Prediction(str(path), error="no such file or folder"))
    return files, errors


class Predictor:
    """A loaded model with its preprocessing, for predicting files.

    Parameters
    ----------
    checkpoint : path, optional
        A ``.safetensors`` checkpoint; the model shipped with the package by default.
    threads : int, optional
        Torch intra-op threads.

    Examples
    --------
    >>> predictor = Predictor()                                  # doctest: +SKIP
    >>> predictor.predict(["scan.jpg"])[0].label                 # doctest: +SKIP
    'glioma'
    """

    def __init__(self, checkpoint: str | Path | None = None, threads: int | None = None):
        from .checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        path = Path(checkpoint) if checkpoint else DEFAULT_MODEL
        if checkpoint is None and not path.is_file():
            raise BrainTumorError("no model shipped with this installation", "pass --model PATH to a checkpoint")
        self.path = path
        self.model, self.info = load_checkpoint(path)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.classes = list(self.info.classes)

    def _load(self, path: Path) -> np.ndarray | str:
        try:
            return self.info.preprocess(read_image(path))
        except ImageError as exc:
            return exc.message.split(": ", 1)[-1] if exc.message.startswith(str(path)) else exc.message

    def predict_proba_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for already preprocessed ``N x S x S x 3`` uint8 images."""
        return predict_images(self.model, images, tta=self.info.tta, temperature=self.info.temperature)

    def predict(self, inputs: list[str | Path], batch_size: int = 32, progress: bool = False) -> list[Prediction]:
        """Predict image files and folders; unreadable files yield a `Prediction` with `error` set."""
        files, results = expand_inputs(inputs)
        workers = min(4, os.cpu_count() or 1)
        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress or len(files) < 2)
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(files), batch_size):
                chunk = files[start : start + batch_size]
                loaded = list(pool.map(self._load, chunk))
                good = [i for i, item in enumerate(loaded) if not isinstance(item, str)]
                probs = self.predict_proba_arrays(np.stack([loaded[i] for i in good])) if good else []
                row = dict(zip(good, probs))
                for i, path in enumerate(chunk):
                    if i in row:
                        p = row[i]
                        results.append(
                            Prediction(str(path), self.classes[int(np.argmax(p))], {c: float(v) for c, v in zip(self.classes, p)})
                        )
                    else:
                        results.append(Prediction(str(path), error=loaded[i]))
                bar.update(len(chunk))
        bar.close()
        return results
