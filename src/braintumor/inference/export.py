"""ONNX export and an onnxruntime inference path with the same interface as `TorchRuntime`.

The exported graph is `braintumor.inference.forward.InferenceModel`: input ``images`` (uint8,
``batch x S x S x 3``, the output of the checkpoint's `Preprocess`), outputs ``probabilities``
(``batch x C``) and ``ood_score`` (``batch``); the batch size is dynamic. The checkpoint's
metadata (classes, preprocessing, OOD threshold) travels in the ONNX file's metadata under the
key ``braintumor``, so an ``.onnx`` file alone is enough to predict. An ensemble of checkpoints
exports to one such graph (`ensemble_onnx_bytes`).
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from braintumor.model.checkpoint import ModelInfo, check_same_inputs, load_checkpoint
from braintumor.errors import BrainTumorError
from braintumor.files import OutputError, locked_folder, write_bytes
from braintumor.inference.forward import EnsembleModel, InferenceModel
from braintumor.inference.ood import OODStats
from braintumor.inference.runtime import METADATA_KEY, onnx_cache_path

OPSET = 17


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
    `braintumor.inference.runtime.EnsembleRuntime` computes them.

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
                      members: list | tuple = (), path: Path | None = None) -> bytes:
    """`onnx_bytes` of a checkpoint, kept at `braintumor.inference.runtime.onnx_cache_path` so that only the
    first use pays the export (a few seconds). With `members` (more ``(path, model, info)`` of the
    same inputs), the `ensemble_onnx_bytes` of them all. `path`, that cache path if the caller
    has it already (computing it hashes every checkpoint's bytes)."""
    path = onnx_cache_path([checkpoint, *(m[0] for m in members)], tta) if path is None else path
    if path.is_file():
        return path.read_bytes()
    if members:
        data = ensemble_onnx_bytes([(model, info), *((m, i) for _, m, i in members)], tta,
                                   [str(checkpoint), *(str(p) for p, _, _ in members)])
    else:
        data = onnx_bytes(model, info, tta)
    try:  # the cache is a convenience: a read-only home only costs the export next time
        write_onnx(data, path)
    except OutputError:
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
    out = onnx_path(checkpoint, out, ".onnx")
    with locked_folder(out.parent, existing_only=True):  # not into a run folder a training is writing
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
    """Write a graph to `out` atomically (`braintumor.files.write_bytes`), so that no reader sees
    half of it; an `OutputError` if the disk refuses."""
    return write_bytes(out, data)
