"""Knowledge distillation: train one model to match the averaged predictions of finished runs.

An ensemble of runs is more accurate than one run, but costs one forward pass per member at
prediction time. ``braintumor train --teacher RUN [RUN ...]`` trains a single student whose loss
mixes the cross-entropy against the labels with the Kullback-Leibler divergence to the teachers'
mean softened distribution (Hinton et al., 2015, "Distilling the knowledge in a neural network"):

    loss = (1 - w) * CE(student, label) + w * T^2 * KL(mean_k softmax(teacher_k / T) || softmax(student / T))

with w = ``distill_weight`` and T = ``distill_temperature`` (the T^2 keeps the gradient scale of
the soft term independent of T). The teachers see the same augmented batch as the student.

A teacher must not have trained on any image the student validates or tests on, or the student
would learn those images' labels through it: `load_teachers` re-creates each teacher's split on
the student's data and refuses one that did.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from braintumor.model.checkpoint import load_checkpoint
from braintumor.errors import BrainTumorError
from braintumor.model.device import autocast
from braintumor.model.factory import depthwise_in_float32
from braintumor.data.protocols import run_split


def teacher_checkpoint(path: str | Path) -> Path:
    """The checkpoint of a teacher given as a run folder (its ``model.safetensors``) or a file."""
    path = Path(path)
    checkpoint = path / "model.safetensors" if path.is_dir() else path
    if not checkpoint.is_file():
        raise BrainTumorError(f"teacher {path} is not a checkpoint or a run folder with model.safetensors",
                              "pass finished runs of `braintumor train` to --teacher")
    return checkpoint


def load_teachers(paths, dataset, split, preprocess, classes) -> list[torch.nn.Module]:
    """Load the teacher models for a student trained on `split` of `dataset`.

    Parameters
    ----------
    paths : list of path
        Run folders or checkpoints.
    dataset, split
        The student's data and split.
    preprocess : Preprocess
        The student's; a teacher must share it (it sees the student's input tensors).
    classes : list of str
        The student's classes, in order.

    Raises
    ------
    BrainTumorError
        When a teacher predicts other classes, preprocesses otherwise, was trained on other data,
        or trained on an image of the student's validation or test part.
    """
    held_out = set(split.val.tolist()) | set(split.test.tolist())
    fingerprint = dataset.fingerprint()  # (stats every file: once, not per teacher)
    teachers = []
    for path in paths:
        checkpoint = teacher_checkpoint(path)
        model, info = load_checkpoint(checkpoint)
        if list(info.classes) != list(classes):
            raise BrainTumorError(f"teacher {checkpoint} predicts {list(info.classes)}, not {list(classes)}")
        if info.preprocess.to_dict() != preprocess.to_dict():
            raise BrainTumorError(f"teacher {checkpoint} preprocesses images otherwise ({info.preprocess.to_dict()})",
                                  "distil from runs trained with the same --image-size, --no-crop and --equalize")
        if info.data_fingerprint != fingerprint:
            raise BrainTumorError(f"teacher {checkpoint} was trained on other data", "distil from runs of the same --data")
        leaked = held_out & set(run_split(dataset, info.train_config).train.tolist())
        if leaked:
            raise BrainTumorError(
                f"teacher {checkpoint} trained on {len(leaked)} of this run's validation and test images",
                "distil only from runs of the same protocol, split seed and fold",
            )
        teachers.append(model.eval())
    return teachers


@torch.no_grad()
def teacher_probs(teachers: list[torch.nn.Module], x: torch.Tensor, temperature: float,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The teachers' mean class distribution on batch `x`, softened by `temperature`, in `dtype`
    autocast on `x`'s device (None: float32)."""
    probs = 0
    for model in teachers:
        with autocast(x.device, dtype), depthwise_in_float32(model):
            logits = model(x).float()
        probs = probs + F.softmax(logits / temperature, dim=1)
    return probs / len(teachers)


def distill_loss(logits: torch.Tensor, soft: torch.Tensor, weight: float, temperature: float,
                 hard_loss: torch.Tensor) -> torch.Tensor:
    """``(1 - weight) * hard_loss + weight * T^2 * KL(soft || softmax(logits / T))``."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = F.kl_div(log_student, soft, reduction="batchmean")
    return (1 - weight) * hard_loss + weight * temperature**2 * kl
