"""Checkpoints: one safetensors file holding the weights and, in its metadata, everything needed
to use them (classes, backbone, preprocessing, training config, data fingerprint, metrics).

A JSON copy of the metadata is written beside it for people to read. Loading never unpickles.
Reading the metadata alone (`read_metadata`) needs neither PyTorch nor the weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from braintumor import __version__
from braintumor.errors import BrainTumorError, CheckpointError
from braintumor.files import write_bytes, write_json
from braintumor.data.preprocess import Preprocess
from braintumor.model.views import MirrorView

if TYPE_CHECKING:
    import torch

    from braintumor.model.factory import Classifier

FORMAT = "braintumor-checkpoint"
FORMAT_VERSION = 1
# Named arrays stored beside the weights (e.g. out-of-distribution statistics) carry this prefix
# in the safetensors file; state-dict keys never contain a colon.
ARRAY_PREFIX = "extra:"


@dataclass
class ModelInfo:
    """Plain-data description of a trained model, stored with its weights."""

    classes: list[str]
    backbone: str
    preprocess: Preprocess
    drop_rate: float = 0.5
    temperature: float = 1.0
    tta: bool = False
    tta_view: MirrorView = field(default_factory=MirrorView)
    train_config: dict = field(default_factory=dict)
    data_fingerprint: str = ""
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    # Tensors too large for the JSON metadata (kept in float32, saved in the safetensors file).
    arrays: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """The metadata as plain data, a copy: changing it leaves this info as it is."""
        return copy.deepcopy({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "braintumor_version": __version__,
            "classes": list(self.classes),
            "backbone": self.backbone,
            "preprocess": self.preprocess.to_dict(),
            "drop_rate": self.drop_rate,
            "temperature": self.temperature,
            "tta": self.tta,
            "tta_view": self.tta_view.to_dict(),
            "train_config": self.train_config,
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            "extra": self.extra,
        })

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(
            classes=list(d["classes"]),
            backbone=d["backbone"],
            preprocess=Preprocess.from_dict(d["preprocess"]),
            drop_rate=float(d.get("drop_rate", 0.5)),
            temperature=float(d.get("temperature", 1.0)),
            tta=bool(d.get("tta", False)),
            tta_view=MirrorView.from_dict(d.get("tta_view")),
            train_config=d.get("train_config", {}),
            data_fingerprint=d.get("data_fingerprint", ""),
            metrics=d.get("metrics", {}),
            extra=d.get("extra", {}),
        )


def save_checkpoint(path: str | Path, model: Classifier, info: ModelInfo, half: bool = False) -> Path:
    """Write ``path`` (.safetensors) and ``path`` with suffix .json, each atomically
    (`braintumor.files`): an `OutputError` if the disk refuses, the old files then kept.

    Parameters
    ----------
    half : bool
        Store floating-point weights as float16 (halves the file; used for the shipped model).
    """
    from safetensors.torch import save

    path = Path(path)
    state = {}
    for key, value in model.net.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value
    for key, value in info.arrays.items():
        state[ARRAY_PREFIX + key] = value.detach().cpu().float().contiguous()
    meta = info.to_dict()
    write_bytes(path, save(state, metadata={"braintumor": json.dumps(meta)}))
    write_json(path.with_suffix(".json"), meta)
    return path


def read_metadata(path: str | Path) -> ModelInfo:
    """A checkpoint's `ModelInfo`, validated, without its weights or arrays (``arrays`` is left
    empty): reads the file's header only, and imports no PyTorch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "pass the .safetensors file written by `braintumor train`")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(path, exc) from None
    raw = metadata.get("braintumor")
    if raw is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not a braintumor checkpoint (no braintumor metadata)",
            "pass the model .safetensors written by `braintumor train`",
        )
    return parse_info(raw, str(path), "retrain the model")


def read_info(path: str | Path) -> tuple[ModelInfo, dict[str, torch.Tensor]]:
    """Read a checkpoint's metadata and tensors, validating its format and version."""
    from safetensors.torch import load_file

    info = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _unreadable(Path(path), exc) from None
    info.arrays = {k[len(ARRAY_PREFIX) :]: tensors.pop(k) for k in list(tensors) if k.startswith(ARRAY_PREFIX)}
    return info, tensors


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a braintumor checkpoint (not a readable safetensors file: {exc})",
        "pass the model .safetensors written by `braintumor train`",
    )


def parse_info(raw: str, label: str, remedy: str) -> ModelInfo:
    """`ModelInfo` from the JSON metadata of a checkpoint or an exported model, validated.

    Parameters
    ----------
    raw : str
        The metadata as written by `ModelInfo.to_dict` and ``json.dumps``.
    label : str
        What the metadata came from (a path), for the error messages.
    remedy : str
        What to do when the metadata is damaged or comes from an incompatible version.
    """
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{label}: its braintumor metadata is damaged", remedy) from None
    format_name = meta.get("format") if isinstance(meta, dict) else None
    if format_name != FORMAT:
        raise CheckpointError(f"{label}: unknown checkpoint format {format_name!r}", remedy)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{label}: checkpoint format version {version} (written by braintumor "
            f"{meta.get('braintumor_version', '?')}); this braintumor {__version__} reads version {FORMAT_VERSION}",
            f"upgrade braintumor, or {remedy} with this version",
        )
    try:
        return ModelInfo.from_dict(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{label}: incomplete or unknown checkpoint metadata ({exc}; written by braintumor "
            f"{meta.get('braintumor_version', '?')}, this is {__version__})",
            remedy,
        ) from None


def load_checkpoint(path: str | Path) -> tuple[Classifier, ModelInfo]:
    """Load a model for inference (eval mode, float32) and its `ModelInfo`."""
    from braintumor.model.factory import create_model

    info, tensors = read_info(path)
    model = create_model(info.backbone, len(info.classes), info.preprocess, pretrained=False, drop_rate=info.drop_rate)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model.net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit backbone {info.backbone!r} ({str(exc).splitlines()[0]})",
            "the file is damaged or was written by an incompatible version; retrain the model",
        ) from None
    return model.eval(), info


def check_same_inputs(path, info, first, first_info) -> None:
    """Raise a `BrainTumorError` unless checkpoint `path` (its `info`) takes the same inputs and
    gives the same classes as `first`, so that their probabilities can be averaged."""
    if info.preprocess != first_info.preprocess or list(info.classes) != list(first_info.classes):
        raise BrainTumorError(f"{path} does not share the classes and preprocessing of {first}, so they cannot be averaged",
                              "ensemble models trained with the same --image-size, cropping and classes")
