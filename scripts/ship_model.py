"""Make the model shipped in the package from a training run.

Copies RUN/model.safetensors (weights as float16) to src/braintumor/weights/default.safetensors (+ .json), first
fitting the post-hoc parts (temperature, out-of-distribution statistics) on the run's own
training/validation split if the run predates them. Usage: python scripts/ship_model.py RUN_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from braintumor.model.checkpoint import load_checkpoint, save_checkpoint
from braintumor.data.dataset import load_images, scan
from braintumor.data.protocols import run_labels, run_split
from braintumor.training.trainer import fit_posthoc

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "braintumor" / "weights" / "default.safetensors"


def _portable(path: str) -> str:
    """A path as seen from the repository root, so the shipped metadata names no local folders."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def main(run: str) -> None:
    model, info = load_checkpoint(Path(run) / "model.safetensors")
    cfg = info.train_config
    if "train_minutes" not in info.metrics or "ood" not in info.extra:  # a run from before the post-hoc fits
        dataset = scan(cfg["data"], cfg.get("class_map") or None)
        images, dataset = load_images(dataset, info.preprocess)
        if dataset.fingerprint() != info.data_fingerprint:
            raise SystemExit("the dataset differs from the one the run was trained on")
        split = run_split(dataset, cfg)
        fit_posthoc(model, info, images, run_labels(dataset, cfg, np.r_[split.train, split.val]), split)
    info.extra["shipped_from"] = _portable(str(Path(run).resolve()))
    for key in ("data", "out"):
        cfg[key] = [_portable(p) for p in cfg[key]] if isinstance(cfg[key], list) else _portable(cfg[key])
    save_checkpoint(TARGET, model, info, half=True)  # float16 weights keep the file under 20 MB
    print(f"{TARGET}: {TARGET.stat().st_size / 1e6:.1f} MB, temperature {info.temperature:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
