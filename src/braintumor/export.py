"""ONNX export and an onnxruntime inference path with the same interface as `TorchRuntime`.

The exported graph is `braintumor.inference.InferenceModel`: input ``images`` (uint8,
``batch x S x S x 3``, the output of the checkpoint's `Preprocess`), outputs ``probabilities``
(``batch x C``) and ``ood_score`` (``batch``); the batch size is dynamic. The checkpoint's
metadata (classes, preprocessing, OOD threshold) travels in the ONNX file's metadata under the
key ``braintumor``, so an ``.onnx`` file alone is enough to predict. An ensemble of checkpoints
exports to one such graph (`ensemble_onnx_bytes`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import ModelInfo, load_checkpoint, parse_info
from .errors import BrainTumorError, CheckpointError
from .inference import EnsembleModel, InferenceModel
from .ood import OODStats

OPSET = 17
METADATA_KEY = "braintumor"


def static_same_padding(model: nn.Module, image_size: int) -> nn.Module:
    """A copy of `model` whose TensorFlow-style "same" convolutions pad by constants.

    timm's ``Conv2dSame`` (the stride-2 convolutions of the ``tf_`` EfficientNets) computes its
    padding from each input's size, so the traced graph computes it too, and onnxruntime cannot
    fuse that padding into the convolution: on a 2-core CPU the Pad nodes and the layout
    changes around them took about 30% of Lite0's time at 160 px. The graph's input size is
    fixed (`image_size`), so each convolution's padding is found once, from a forward pass at
    that size, and becomes a constant ``ZeroPad2d`` before a plain convolution with the same
    weights: the same outputs, the constant Pad nodes are fused away, and the graph runs 1.3
    times as fast, 1.6 times with the test-time view (``benchmarks/onnx_padding.py``).
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    if not any(isinstance(module, Conv2dSame) for module in model.modules()):
        return model  # nothing to change: no copy, no forward pass
    model = copy.deepcopy(model)
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_, args) -> None:
            sizes[name] = tuple(args[0].shape[-2:])
        return hook

    hooks = [module.register_forward_pre_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, Conv2dSame)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    for name, size in sizes.items():
        conv = model.get_submodule(name)
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                          conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        padding = pad_same_arg(size, conv.kernel_size, conv.stride, conv.dilation)
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, nn.Sequential(nn.ZeroPad2d(padding), plain))
    return model


def onnx_bytes(model, info: ModelInfo, tta: bool | None = None) -> bytes:
    """Serialise a loaded model as ONNX (see the module docstring for inputs and outputs).

    Parameters
    ----------
    tta : bool, optional
        Bake test-time augmentation (the checkpoint's `tta_view`) into the graph; the
        checkpoint's setting by default.
    """
    tta = info.tta if tta is None else bool(tta)
    meta = info.to_dict()
    meta["tta"] = tta
    return _export(_inference_model(model, info, tta, OODStats.load_from(info)), meta, info.preprocess.image_size)


def ensemble_onnx_bytes(members: list, tta: bool | None = None, names: list | None = None) -> bytes:
    """Serialise an ensemble as one ONNX graph with the inputs and outputs of `onnx_bytes`: the
    members' calibrated probabilities averaged, the OOD score the mean of each member's score over
    its threshold (so the file's threshold is 1; none when a member has no detector), as
    `braintumor.inference.EnsembleRuntime` computes them.

    Parameters
    ----------
    members : list of (model, ModelInfo)
        Loaded checkpoints of the same classes and preprocessing, the first one's metadata kept
        (less its metrics) with the members listed in ``extra["ensemble"]``.
    tta : bool, optional
        Bake test-time augmentation into every member; each member's own setting by default.
    names : list of str, optional
        What ``extra["ensemble"]`` calls the members (default: member 1, 2, ...).
    """
    infos = [info for _, info in members]
    ttas = [info.tta if tta is None else bool(tta) for info in infos]
    detectors = [OODStats.load_from(info) for info in infos]
    thresholds = [None if d is None else float(d.threshold) for d in detectors]
    module = EnsembleModel([_inference_model(m, i, t, d) for (m, i), t, d in zip(members, ttas, detectors)], thresholds)
    meta = infos[0].to_dict()
    meta.update(tta=all(ttas), temperature=1.0, metrics={})  # each member's temperature is inside the graph
    meta["extra"].pop("ood", None)
    if None not in thresholds:
        meta["extra"]["ood"] = {"method": "mean of the members' scores, each over its own threshold", "threshold": 1.0}
    names = names or [f"member {n + 1}" for n in range(len(members))]
    meta["extra"]["ensemble"] = [{"model": str(name), "temperature": info.temperature, "tta": t, "ood_threshold": threshold}
                                 for name, info, t, threshold in zip(names, infos, ttas, thresholds)]
    return _export(module, meta, infos[0].preprocess.image_size)


def _inference_model(model, info: ModelInfo, tta: bool, ood: OODStats | None) -> InferenceModel:
    size = info.preprocess.image_size
    return InferenceModel(static_same_padding(model, size), info.temperature, tta, ood, info.tta_view, size).eval()


def _export(module: nn.Module, meta: dict, size: int) -> bytes:
    """Trace `module` (uint8 images of side `size` in) to ONNX bytes carrying `meta`."""
    import onnx

    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module.eval(),
            (example,),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=["probabilities", "ood_score"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}, "ood_score": {0: "batch"}},
            opset_version=OPSET,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    for node in graph.graph.node:
        # The exporter names the absent constant_value of a Pad as an empty input; onnxruntime
        # then does not fuse the Pad into the next Conv. Dropping it changes nothing else.
        while node.op_type == "Pad" and node.input and not node.input[-1]:
            node.input.pop()
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    return graph.SerializeToString()


def cached_onnx_bytes(checkpoint: str | Path, model, info: ModelInfo, tta: bool | None = None,
                      members: list | tuple = ()) -> bytes:
    """`onnx_bytes` of a checkpoint, kept in the cache folder so that only the first use pays the
    export (a few seconds). With `members` (more ``(path, model, info)`` of the same inputs), the
    `ensemble_onnx_bytes` of them all. The key covers every checkpoint's bytes in order, `tta`,
    and the versions of torch and of the code that defines the graph, so a stale graph is never
    reused."""
    from . import __version__
    from .data import cache_dir

    key = hashlib.sha256()
    for path in [checkpoint, *(m[0] for m in members)]:
        key.update(hashlib.sha256(Path(path).read_bytes()).digest())
    # the code that builds the graph, and the code that writes and reads the metadata it carries
    for source in ("inference.py", "ood.py", "export.py", "augment.py", "checkpoint.py", "preprocess.py"):
        key.update((Path(__file__).parent / source).read_bytes())
    key.update(f"{tta}|{__version__}|{torch.__version__}|{OPSET}".encode())  # None: each checkpoint's own
    path = cache_dir() / "onnx" / f"{key.hexdigest()[:32]}.onnx"
    if path.is_file():
        return path.read_bytes()
    if members:
        data = ensemble_onnx_bytes([(model, info), *((m, i) for _, m, i in members)], tta,
                                   [str(checkpoint), *(str(p) for p, _, _ in members)])
    else:
        data = onnx_bytes(model, info, tta)
    try:  # the cache is a convenience: a read-only home only costs the export next time
        write_onnx(data, path)
    except OSError:
        pass
    return data


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, tta: bool | None = None,
                members: list | tuple = ()) -> Path:
    """Export a checkpoint to ONNX; writes `out` (default: the checkpoint's path with ``.onnx``).

    Parameters
    ----------
    checkpoint : path
        A ``.safetensors`` checkpoint written by ``braintumor train``.
    out : path, optional
        The ``.onnx`` file to write.
    tta : bool, optional
        Bake test-time augmentation in (doubles the cost); the checkpoint's setting by default.
    members : list of path, optional
        More checkpoints of the same classes and preprocessing: the file is then their ensemble
        with `checkpoint` (`ensemble_onnx_bytes`), one network pass per model.
    """
    from .inference import check_same_inputs

    out = onnx_path(checkpoint, out, ".onnx")
    model, info = load_checkpoint(checkpoint)
    if not members:
        return write_onnx(onnx_bytes(model, info, tta), out)
    loaded = [(model, info)]
    for member in members:
        other, other_info = load_checkpoint(member)
        check_same_inputs(member, other_info, checkpoint, info)
        loaded.append((other, other_info))
    return write_onnx(ensemble_onnx_bytes(loaded, tta, [str(checkpoint), *map(str, members)]), out)


def onnx_path(checkpoint: str | Path, out: str | Path | None, ending: str) -> Path:
    """`out`, checked to end in ``.onnx``; by default the checkpoint's path without its suffix
    plus `ending` (``.onnx``, ``-int8.onnx``)."""
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.with_name(checkpoint.stem + ending)
    if out.suffix != ".onnx":
        raise BrainTumorError(f"out must end in .onnx, got {out}", f"pass e.g. --out model{ending}")
    return out


def write_onnx(data: bytes, out: Path) -> Path:
    """Write a graph to `out` through a temporary file, so that no reader sees half of it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


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
    """

    name = "onnx"

    def __init__(self, source: str | Path | bytes, threads: int | None = None, spin: bool = True):
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
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"{label} is not a readable ONNX model ({str(exc).splitlines()[0]})",
                                  "write one with `braintumor export MODEL`") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{label} is an ONNX model but not one exported by braintumor",
                                  "write one with `braintumor export MODEL`")
        self.info = parse_info(raw, label, "export the model again with `braintumor export MODEL`")
        self.classes = list(self.info.classes)
        self.tta = self.info.tta
        ood = self.info.extra.get("ood")
        self.threshold = float(ood["threshold"]) if ood else None

    def run(self, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (``N x C``) and OOD scores (``N``) of preprocessed uint8 images.

        Images go through in chunks of `batch_size`: on a 2-core CPU onnxruntime ran Lite0 at
        160 px at 490 images/s in chunks of 8 and 400 in chunks of 32 (caches).
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
