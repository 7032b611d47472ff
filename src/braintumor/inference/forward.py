"""The model as prediction uses it: preprocessed uint8 images in, class probabilities and
out-of-distribution scores out.

`InferenceModel` holds the whole computation in one torch module (scaling to ``[0, 1]``, the
network, test-time augmentation with a mirrored view, temperature, softmax and the Mahalanobis
score), so that prediction in PyTorch and the exported ONNX graph (`braintumor.inference.export`) are the
same computation.
`TorchRuntime` runs it in PyTorch; `braintumor.inference.runtime.OnnxRuntime` offers the same interface.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from braintumor.distributed import map_shards
from braintumor.model.device import autocast, autocast_dtype, to_device
from braintumor.model.factory import to_float
from braintumor.model.views import MirrorView
from braintumor.inference.ood import OODStats, forward_with_ood_features
from braintumor.inference.runtime import combine_members


class InferenceModel(nn.Module):
    """``N x S x S x 3`` uint8 images → (``N x C`` probabilities, ``N`` OOD scores).

    Parameters
    ----------
    classifier : Classifier
        The network (normalisation inside).
    temperature : float
        Logits are divided by it before the softmax.
    tta : bool
        Average the logits of each image and its test-time view (`tta_view`).
    tta_view : MirrorView
        The mirrored (possibly rotated) view; its sampling grid is computed once, for the
        classifier's input size, so the exported graph holds it as a constant.
    ood : OODStats, optional
        The out-of-distribution detector; without one the scores are NaN.
    """

    def __init__(
        self,
        classifier: nn.Module,
        temperature: float = 1.0,
        tta: bool = False,
        ood: OODStats | None = None,
        tta_view: MirrorView = MirrorView(),
        image_size: int | None = None,
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.classifier = classifier.eval()
        self.temperature = float(temperature)
        self.tta = bool(tta)
        self.tta_view = tta_view
        grid = tta_view.grid(image_size) if tta and not tta_view.plain and image_size else None
        self.register_buffer("view_grid", grid, persistent=False)
        self.ood = ood.scorer() if ood is not None else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_float(images)
        logits, features = forward_with_ood_features(self.classifier, x)
        if self.tta:  # a second pass for the views (in onnxruntime faster than one pass of twice the batch)
            logits = (logits + self.classifier(self.tta_view.apply(x, self.view_grid))) / 2
        probabilities = torch.softmax(logits.float() / self.temperature, dim=1)  # float32 also under bf16 autocast
        if self.ood is None:
            scores = torch.full_like(probabilities[:, 0], float("nan"))
        else:
            scores = self.ood(features)
        return probabilities, scores


@torch.inference_mode()
def run_batches(module: nn.Module, images: np.ndarray, batch_size: int = 64, bf16: bool = False,
                device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run an `InferenceModel` (or an `EnsembleModel`) over preprocessed uint8 images in batches.

    The one loop every prediction in PyTorch goes through: `TorchRuntime` (``predict``, the
    server, ``explain``), and `predict_images` (validation, temperature fitting, ``evaluate``,
    external validation). In a data-parallel training job the images are shared out among the
    ranks and the results gathered (`braintumor.distributed.map_shards`).

    Parameters
    ----------
    module : nn.Module
        Maps ``N x S x S x 3`` uint8 to ``(N x C probabilities, N scores)``.
    images : numpy.ndarray
        ``N x S x S x 3`` uint8, the output of the model's `Preprocess`.
    batch_size : int
    bf16 : bool
        Run in mixed precision: bfloat16 autocast on a CPU (faster with AVX-512 BF16; used while
        training), the GPU's own on a GPU (`braintumor.model.device.autocast_dtype`).
    device : torch.device, optional
        Where to run (default: where the module's parameters are); the module is moved there.

    Returns
    -------
    probabilities : numpy.ndarray
        ``N x C`` float64.
    scores : numpy.ndarray
        ``N`` out-of-distribution scores (NaN without a detector).
    """
    was_training = module.training
    module.eval()
    if device is None:
        device = next(module.parameters(), torch.empty(0)).device
    module.to(device)
    dtype = autocast_dtype(device, bf16)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, scores = [], []
        for start in range(0, len(images), batch_size):
            batch = to_device(torch.from_numpy(np.require(images[start : start + batch_size], requirements=["C", "W"])), device)
            with autocast(device, dtype):
                p, s = module(batch)
            probs.append(p.float().cpu().numpy())
            scores.append(s.float().cpu().numpy())
        if not probs:
            return np.zeros((0, 0)), np.zeros(0)
        return np.concatenate(probs).astype(np.float64), np.concatenate(scores).astype(np.float64)

    try:
        return map_shards(run, images)  # in a data-parallel job, each rank runs its share
    finally:
        module.train(was_training)


def predict_images(
    model: nn.Module,
    images: np.ndarray,
    batch_size: int = 64,
    tta: bool = False,
    bf16: bool = False,
    temperature: float = 1.0,
    tta_view: MirrorView = MirrorView(),
    device: torch.device | None = None,
) -> np.ndarray:
    """Class probabilities of a network for preprocessed ``N x S x S x 3`` uint8 images: the
    `InferenceModel` that ``predict`` and the exported graph run, without the OOD detector.

    Parameters
    ----------
    tta : bool
        Average the logits of each image and its test-time view.
    tta_view : MirrorView
        That view: the mirror, possibly rotated (the checkpoint's ``info.tta_view``).
    bf16 : bool
        Run in bfloat16 autocast (used during training).
    temperature : float
        Divide logits by this before the softmax (calibration).
    device : torch.device, optional
        Where to run (default: where the model is).
    """
    size = images.shape[1] if len(images) else None
    module = InferenceModel(model, temperature, tta, None, tta_view, size)
    was_training = model.training
    try:
        return run_batches(module, images, batch_size, bf16, device)[0]
    finally:
        model.train(was_training)


class TorchRuntime:
    """Runs an `InferenceModel` in PyTorch.

    Parameters
    ----------
    model : Classifier
    info : ModelInfo
    tta : bool, optional
        Override the checkpoint's test-time augmentation setting.

    Attributes
    ----------
    classes : list of str
    threshold : float or None
        OOD scores above it are rejected; None when the model has no detector.
    """

    name = "torch"

    def __init__(self, model: nn.Module, info, tta: bool | None = None):
        self.info = info
        self.classes = list(info.classes)
        ood = OODStats.load_from(info)
        self.threshold = ood.threshold if ood is not None else None
        self.tta = info.tta if tta is None else bool(tta)
        self.module = InferenceModel(model, info.temperature, self.tta, ood, info.tta_view, info.preprocess.image_size).eval()
        self.classifier = model

    def run(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (``N x C``) and OOD scores (``N``) of preprocessed uint8 images."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes))), np.zeros(0)
        return run_batches(self.module, images, batch_size)


class EnsembleModel(nn.Module):
    """Several `InferenceModel`s as one module, computing what `EnsembleRuntime` computes
    (`combine_members`), so that an ensemble exports to one ONNX graph.

    Parameters
    ----------
    members : list of InferenceModel
    thresholds : list of float or None
        Each member's OOD threshold; with a None the scores are NaN (no rejection).
    """

    def __init__(self, members: list, thresholds: list):
        super().__init__()
        if len(members) != len(thresholds) or len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, one threshold each; got {len(members)} and {len(thresholds)}")
        self.members = nn.ModuleList(members)
        self.thresholds = list(thresholds)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, scores = combine_members([member(images) for member in self.members], self.thresholds)
        return probs, (torch.full_like(probs[:, 0], float("nan")) if scores is None else scores)
