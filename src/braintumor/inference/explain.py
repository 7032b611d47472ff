"""Grad-CAM explanations: where in the image the evidence for the predicted class lies.

The heatmap comes from pytorch-grad-cam (``GradCAM``), for the class the model predicts (or one
you choose), read from the backbone's last stage at stride 16 rather than its final stride-32 map:
at the model's 160-pixel input the final map is only 5 x 5 cells, too coarse to tell which part
of a slice the evidence comes from (the test with a blob in one quadrant fails there, and passes
at stride 16, where the map is 10 x 10 and still deep in the network). It is computed on the
image as the network sees it (after the checkpoint's `Preprocess`: foreground crop, square pad,
resize), which is also what the PNG shows.

An ensemble (`Predictor` of several checkpoints) is explained by the mean of its members'
heatmaps for the ensemble's class, rescaled so that its peak is 1: where the models agree the
evidence lies stays bright, what only one of them looks at is dimmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from braintumor.model.factory import to_float
from braintumor.errors import BrainTumorError, ImageError
from braintumor.files import locked_folder
from braintumor.metrics.figures import save_figure


@dataclass
class Explanation:
    """One explained image.

    Attributes
    ----------
    image : numpy.ndarray
        ``S x S x 3`` uint8, the network's input.
    heatmap : numpy.ndarray
        ``S x S`` float32 in ``[0, 1]``; 1 where the evidence for `label` is strongest.
    label : str
        The explained class (the predicted one unless a target was given).
    probability : float
        The model's probability of `label`.
    probabilities : dict
        Every class's probability.
    accepted : bool or None
        The out-of-distribution decision (None when the model has no detector).
    ood_score : float or None
    """

    image: np.ndarray
    heatmap: np.ndarray
    label: str
    probability: float
    probabilities: dict = field(default_factory=dict)
    accepted: bool | None = None
    ood_score: float | None = None


def gradcam_layer(model: nn.Module, stride: int = 16) -> nn.Module:
    """The layer Grad-CAM reads: the backbone's last stage with output `stride` (from timm's
    ``feature_info``; ``blocks.4`` of EfficientNet-Lite0), else its last convolution."""
    net = getattr(model, "net", model)
    stages = [info["module"] for info in getattr(net, "feature_info", []) if info.get("reduction") == stride]
    if stages:
        return net.get_submodule(stages[-1])
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise BrainTumorError("this backbone has no convolution for Grad-CAM to read", "use a convolutional backbone")
    return convs[-1]


def gradcam(model: nn.Module, images: np.ndarray, targets: list[int], layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (``N x S x S`` float32 in [0, 1]) of preprocessed uint8 images.

    Parameters
    ----------
    model : Classifier
        Takes ``N x 3 x S x S`` floats in [0, 1], returns logits.
    images : numpy.ndarray
        ``N x S x S x 3`` uint8.
    targets : list of int
        The class to explain for each image.
    layer : torch.nn.Module, optional
        The layer whose activations and gradients are used (default: `gradcam_layer`).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be N x S x S x 3 uint8, got {images.dtype} {images.shape}")
    if len(targets) != len(images):
        raise ValueError(f"targets must have one class per image: {len(targets)} for {len(images)} images")
    was_training = model.training
    model.eval()
    x = to_float(torch.from_numpy(np.require(images, requirements=["C", "W"])).to(next(model.parameters()).device))
    with torch.inference_mode(False), GradCAM(model=model, target_layers=[layer or gradcam_layer(model)]) as cam:
        heatmaps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    model.train(was_training)
    return np.nan_to_num(np.asarray(heatmaps, dtype=np.float32))


def ensemble_gradcam(models: list[nn.Module], images: np.ndarray, targets: list[int]) -> np.ndarray:
    """Heatmaps of an ensemble: the mean of each model's `gradcam` for the same `targets`, each
    image's map rescaled to a peak of 1 (all zeros stay zeros). One model gives its own heatmaps."""
    if not models:
        raise ValueError("models must hold at least one network")
    if len(models) == 1:
        return gradcam(models[0], images, targets)
    mean = np.mean([gradcam(model, images, targets) for model in models], axis=0)
    peak = mean.max(axis=(1, 2), keepdims=True)
    return np.divide(mean, peak, out=np.zeros_like(mean), where=peak > 0).astype(np.float32)


def save_png(explanation: Explanation, path: str | Path, title: str | None = None) -> Path:
    """Write a figure: the input, the heatmap overlaid, the class and its probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    e = explanation
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.4, 4.5), dpi=110)
    ax1.imshow(e.image)
    ax1.set_title("input (as the model sees it)", fontsize=10)
    ax2.imshow(e.image)
    overlay = ax2.imshow(e.heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax2.set_title(f"Grad-CAM for {e.label}", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_axis_off()
    fig.colorbar(overlay, ax=ax2, fraction=0.046, pad=0.04, label="evidence (relative)")
    headline = f"{e.label}: {100 * e.probability:.1f}%"
    if e.accepted is False:
        headline = f"NOT A BRAIN MRI? (out-of-distribution score {e.ood_score:.1f}); model's guess {headline}"
    fig.suptitle(f"{title}\n{headline}" if title else headline, fontsize=11, color="firebrick" if e.accepted is False else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def explain_files(
    predictor,
    inputs: list[str | Path],
    out_dir: str | Path,
    frame: int | None = None,
    target: str | None = None,
    progress: bool = False,
    axis: int | None = None,
    volume: int | None = None,
) -> list[dict]:
    """Explain image files and folders, writing one PNG per image (per DICOM frame, per slice of
    a NIfTI volume with enough brain).

    Parameters
    ----------
    predictor : Predictor
        Loaded from ``.safetensors`` checkpoints (Grad-CAM needs the PyTorch model's gradients;
        the probabilities come from whichever runtime the predictor uses). Of several, an
        ensemble: its class, and the mean of the members' heatmaps (`ensemble_gradcam`).
    out_dir : path
        Folder for the PNGs, named ``<file stem>[_frame<N>]_gradcam.png`` (``_slice<N>`` for a
        NIfTI volume's slice).
    frame : int, optional
        Only this frame (from 1) of multi-frame DICOM files, this slice (from 1) of NIfTI volumes.
    axis, volume : int, optional
        The slice axis (0, 1 or 2; default: the axial one) and the volume (from 1) of a 4-D
        series, for NIfTI volumes (`braintumor.data.nifti.read_nifti`).
    target : str, optional
        Explain this class instead of the predicted one.

    Returns
    -------
    list of dict
        Per image: path, frame, png, label, probability, accepted, ood_score (and axis and
        slices for a NIfTI volume's slice); or path and error.
        Each PNG is written atomically, holding the lock of `out_dir` (`braintumor.files`).
    """
    models = predictor.models
    if any(model is None for model in models):
        raise BrainTumorError("Grad-CAM needs the PyTorch model", "pass .safetensors checkpoints, not .onnx files")
    classes = predictor.classes
    if target is not None and target not in classes:
        raise BrainTumorError(f"unknown target class {target!r}", "choose one of: " + ", ".join(classes))
    with locked_folder(out_dir) as out_dir:  # (the folder is one command's at a time)
        return _explain_files(predictor, inputs, out_dir, frame, target, progress, axis, volume)


def _explain_files(predictor, inputs, out_dir: Path, frame: int | None, target: str | None, progress: bool,
                   axis: int | None = None, volume: int | None = None) -> list[dict]:
    from tqdm.auto import tqdm

    from braintumor.data.imageio import load_frames
    from braintumor.data.nifti import nifti_stem
    from braintumor.inference.predictor import expand_inputs

    models, classes = predictor.models, predictor.classes
    files, missing = expand_inputs(inputs)
    results = [p.to_dict() for p in missing]
    used: set[str] = set()
    for path in tqdm(files, desc="explaining", unit="file", disable=not progress or len(files) < 2):
        try:
            decoded, extra = load_frames(path, frame, axis, volume)
            frames = [(n, predictor.info.preprocess(rgb)) for n, rgb in decoded]
        except ImageError as exc:
            results.append({"path": str(path), "error": exc.message.removeprefix(f"{path}: ")})
            continue
        for number, image in frames:
            probs, scores = predictor.runtime.run(image[None])
            index = classes.index(target) if target else int(np.argmax(probs[0]))
            heatmap = ensemble_gradcam(models, image[None], [index])[0]
            score = None if np.isnan(scores[0]) else float(scores[0])
            accepted = None if score is None or predictor.runtime.threshold is None else score <= predictor.runtime.threshold
            explanation = Explanation(image, heatmap, classes[index], float(probs[0][index]),
                                      dict(zip(classes, map(float, probs[0]))), accepted, score)
            part = "slice" if extra else "frame"
            name = (nifti_stem(path) if extra else path.stem) + (f"_{part}{number}" if number is not None else "")
            while name in used:
                name += "_"
            used.add(name)
            title = path.name + (f", {part} {number}" if number is not None else "")
            if len(models) > 1:
                title += f" (ensemble of {len(models)} models)"
            png = save_png(explanation, out_dir / f"{name}_gradcam.png", title)
            results.append({"path": str(path), "frame": number, "png": str(png), "label": explanation.label,
                            "probability": explanation.probability, "accepted": accepted, "ood_score": score, **extra})
    return results
