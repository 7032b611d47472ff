"""Running a model without PyTorch: `OnnxRuntime` (an exported graph in onnxruntime),
`EnsembleRuntime` (several runtimes averaged), and where the graph of a checkpoint is cached.

`braintumor predict` with a cached graph imports neither torch nor timm, so it starts in a
fraction of the time and memory that loading the network in PyTorch takes (measured by
`benchmarks/startup_speed.py`, figures in docs/results.md). The graph itself is written with PyTorch (`braintumor.inference.export`), once per
checkpoint, and kept at `onnx_cache_path`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

import numpy as np

from braintumor.model.checkpoint import parse_info
from braintumor.errors import CheckpointError

METADATA_KEY = "braintumor"
# The code that defines the exported graph, and that writes and reads the metadata it carries:
# part of the cache key, so a graph written by other code is never reused.
GRAPH_SOURCES = ("inference/forward.py", "inference/ood.py", "inference/export.py", "inference/runtime.py",
                 "model/factory.py", "model/views.py", "model/checkpoint.py", "data/preprocess.py")


def onnx_cache_path(checkpoints: list, tta: bool | None = None) -> Path:
    """Where the ONNX graph of these checkpoints (one, or an ensemble in this order) is cached
    (`braintumor.inference.export.cached_onnx_bytes` writes it). The key covers every checkpoint's bytes
    in order, `tta` (None: each checkpoint's own setting), the versions of braintumor and torch,
    and `GRAPH_SOURCES`, so a stale graph is never reused. Needs no PyTorch."""
    from braintumor import __version__
    from braintumor.data.dataset import cache_dir

    key = hashlib.sha256()
    for path in checkpoints:
        key.update(hashlib.sha256(Path(path).read_bytes()).digest())
    for source in GRAPH_SOURCES:
        key.update((Path(__file__).parents[1] / source).read_bytes())
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "none"
    key.update(f"{tta}|{__version__}|{torch_version}".encode())
    return cache_dir() / "onnx" / f"{key.hexdigest()[:32]}.onnx"


class OnnxRuntime:
    """Runs an exported model in onnxruntime on the CPU.

    Parameters
    ----------
    source : path or bytes
        An ``.onnx`` file written by `export_onnx`, or its bytes.
    threads : int, optional
        Intra-op threads (default: all cores).
    spin : bool
        Let idle threads spin for the next piece of work (lowest latency for one session); off
        where several sessions take turns on the same cores, as an ensemble's members do.

    Attributes
    ----------
    info : ModelInfo
        From the file's metadata (no weights; ``tta`` is what the graph does).
    classes : list of str
    threshold : float or None
        OOD scores above it are rejected; None when the model has no detector.
    member_thresholds : list of float or None
        For an ensemble's graph, each member's own threshold; else ``[threshold]``.
    """

    name = "onnx"

    def __init__(self, source: str | Path | bytes, threads: int | None = None, spin: bool = True,
                 providers: list | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        label = "the exported model" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes):
            source = Path(source)
            if not source.is_file():
                raise CheckpointError(f"ONNX model not found: {source}", "write one with `braintumor export MODEL`")
            source = str(source)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"{label} is not a readable ONNX model ({str(exc).splitlines()[0]})",
                                  "write one with `braintumor export MODEL`") from None
        self.providers = self.session.get_providers()  # what onnxruntime runs the graph with, in order
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{label} is an ONNX model but not one exported by braintumor",
                                  "write one with `braintumor export MODEL`")
        self.info = parse_info(raw, label, "export the model again with `braintumor export MODEL`")
        self.classes = list(self.info.classes)
        self.tta = self.info.tta
        ood = self.info.extra.get("ood")
        self.threshold = float(ood["threshold"]) if ood else None
        # an ensemble's graph lists its members' thresholds (None: a member without a detector)
        self.member_thresholds = [m["ood_threshold"] for m in self.info.extra.get("ensemble", [])] or [self.threshold]

    def run(self, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (``N x C``) and OOD scores (``N``) of preprocessed uint8 images.

        Images go through in chunks of `batch_size`: small chunks stay in the CPU's caches, and on
        a 2-core CPU chunks of 8 ran faster than chunks of 32 (docs/results.md).
        """
        probs, scores = [], []
        for start in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.uint8)
            p, s = self.session.run(None, {"images": batch})
            probs.append(p)
            scores.append(s)
        if not probs:
            return np.zeros((0, len(self.classes))), np.zeros(0)
        return np.concatenate(probs).astype(np.float64), np.concatenate(scores).astype(np.float64)


def onnx_providers(device: str | None) -> tuple[list, str | None]:
    """onnxruntime's execution providers for a ``--device`` name, without importing PyTorch, and a
    note when a GPU was asked for and cannot be had.

    ``cuda``, ``cuda:N`` and ``auto`` take the CUDA execution provider when this onnxruntime has it
    (the ``onnxruntime-gpu`` package), with the CPU one behind it; otherwise the CPU one, and for
    ``cuda`` the note says so. Apple's MPS has no onnxruntime provider here: the CPU one.
    """
    import onnxruntime as ort

    name = (device or "cpu").strip().lower()
    if name == "cpu":
        return ["CPUExecutionProvider"], None
    if name.startswith("cuda") or name == "auto":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(name.split(":")[1]) if ":" in name else 0
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], None
        if name == "auto":
            return ["CPUExecutionProvider"], None
    return ["CPUExecutionProvider"], (f"note: onnxruntime here has no execution provider for --device {name} "
                                      "(for CUDA: pip install onnxruntime-gpu); running on the CPU")


class EnsembleRuntime:
    """Runs several runtimes (`braintumor.inference.TorchRuntime` or `OnnxRuntime`) on the same
    preprocessed images: the probabilities are the mean of the members' calibrated ones.

    The out-of-distribution score is the mean of each member's score divided by its own
    threshold, so the ensemble's threshold is 1 (and None, no rejection, when a member has no
    detector). Members must share classes and preprocessing (`check_same_inputs`).

    Attributes
    ----------
    members : list
    classes : list of str
    threshold : float or None
    tta : bool
        Whether every member averages its test-time view.
    """

    name = "ensemble"

    def __init__(self, members: list):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = list(members)
        self.classes = list(members[0].classes)
        self.threshold = 1.0 if all(m.threshold is not None for m in members) else None
        self.tta = all(m.tta for m in members)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean probabilities (``N x C``) and OOD scores in threshold units (``N``)."""
        outputs = [m.run(images) for m in self.members]
        probs, scores = combine_members(outputs, [m.threshold for m in self.members])
        return probs, (np.full(len(probs), np.nan) if scores is None else scores)


def combine_members(outputs: list, thresholds: list):
    """An ensemble's ``(probabilities, scores)`` from its members' ``(probabilities, scores)``:
    the mean probabilities, and the mean of each member's score over its threshold (None when a
    threshold is None). Works alike on numpy arrays (`EnsembleRuntime`) and torch tensors
    (`EnsembleModel`, the exported graph)."""
    probs = mean_probabilities([p for p, _ in outputs])
    if any(t is None for t in thresholds):
        return probs, None
    return probs, sum(s / float(t) for (_, s), t in zip(outputs, thresholds)) / len(outputs)


def mean_probabilities(probabilities: list):
    """The ensemble rule: the mean of the members' calibrated probabilities (numpy or torch).

    Every ensemble goes through it: `predict` and the server (`combine_members`), the exported
    graph, ``evaluate -m A -m B`` and external validation."""
    return sum(probabilities) / len(probabilities)
