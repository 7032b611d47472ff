"""ONNX export: the onnxruntime path gives PyTorch's probabilities (within 1e-4) and OOD scores,
for any batch size, with or without flip test-time augmentation; an ensemble exports to one graph
that computes what the ensemble computes in PyTorch."""

import numpy as np
import pytest
from PIL import Image

from braintumor.model.checkpoint import load_checkpoint
from braintumor.cli import main
from braintumor.errors import CheckpointError
from braintumor.inference.export import export_onnx, onnx_bytes
from braintumor.inference.forward import TorchRuntime, predict_images
from braintumor.inference.predictor import Predictor
from braintumor.inference.runtime import OnnxRuntime
from braintumor.model.views import MirrorView


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint, tmp_path_factory):
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _images(n: int, seed: int = 0) -> np.ndarray:
    from synthetic import tumor_slice

    rng = np.random.default_rng(seed)
    slices = [tumor_slice(i % 4, rng, 128) for i in range(n // 2)]
    noise = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(n - n // 2)]
    return np.stack(slices + noise)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_onnx_matches_pytorch_for_any_batch_size(tiny_checkpoint, onnx_file, batch):
    model, info = load_checkpoint(tiny_checkpoint)
    images = _images(8, seed=batch)
    onnx_probs, onnx_scores = OnnxRuntime(onnx_file, threads=1).run(images, batch_size=batch)
    torch_probs = predict_images(model, images, tta=info.tta, temperature=info.temperature)
    assert onnx_probs.shape == (8, 4)
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    _, torch_scores = TorchRuntime(model, info).run(images)
    assert np.allclose(onnx_scores, torch_scores, rtol=1e-4)


@pytest.mark.parametrize("view", [MirrorView(), MirrorView(angle=8.0), MirrorView(angle=-5.0, zoom=1.1)])
def test_tta_view_and_temperature_are_baked_in(tiny_checkpoint, view):
    model, info = load_checkpoint(tiny_checkpoint)
    info.temperature, info.tta_view = 1.7, view
    images = _images(4, seed=9)
    runtime = OnnxRuntime(onnx_bytes(model, info, tta=True), threads=1)
    assert runtime.tta is True and runtime.info.tta_view == view
    expected = predict_images(model, images, tta=True, temperature=1.7, tta_view=view)
    assert np.abs(runtime.run(images)[0] - expected).max() < 1e-4
    assert np.abs(TorchRuntime(model, info, tta=True).run(images)[0] - expected).max() < 1e-4


def test_metadata_travels_in_the_onnx_file(tiny_checkpoint, onnx_file):
    _, info = load_checkpoint(tiny_checkpoint)
    runtime = OnnxRuntime(onnx_file)
    assert runtime.classes == info.classes
    assert runtime.info.preprocess == info.preprocess
    assert runtime.threshold == pytest.approx(info.extra["ood"]["threshold"])


def test_predict_with_an_onnx_file_or_runtime_matches_torch(tiny_checkpoint, onnx_file, tmp_path):
    from synthetic import tumor_slice

    rng = np.random.default_rng(4)
    for i in range(5):
        Image.fromarray(tumor_slice(i % 4, rng, 150)).save(tmp_path / f"s{i}.jpg", quality=90)
    reference = Predictor(tiny_checkpoint, runtime="torch").predict([tmp_path], batch_size=2)
    for predictor in (Predictor(onnx_file), Predictor(tiny_checkpoint, runtime="onnx"), Predictor(tiny_checkpoint)):
        assert predictor.runtime.name == "onnx"
        got = predictor.predict([tmp_path], batch_size=2)
        for a, b in zip(reference, got):
            assert a.path == b.path and a.label == b.label and a.accepted == b.accepted
            assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-4


def test_export_command_and_bad_onnx_files(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--no-tta"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    assert OnnxRuntime(tmp_path / "m.onnx").tta is False
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        OnnxRuntime(tmp_path / "junk.onnx")
    with pytest.raises(CheckpointError, match="not found"):
        OnnxRuntime(tmp_path / "missing.onnx")


@pytest.mark.parametrize("change", ["newer field", "newer format"])
def test_an_onnx_file_from_an_incompatible_version_is_one_clear_error(onnx_file, tmp_path, change):
    import json

    import onnx

    graph = onnx.load(str(onnx_file))
    entry = next(e for e in graph.metadata_props if e.key == "braintumor")
    meta = json.loads(entry.value)
    if change == "newer field":
        meta["preprocess"]["sharpen"] = True
    else:
        meta["format_version"] = 99
    entry.value = json.dumps(meta)
    onnx.save(graph, str(tmp_path / "newer.onnx"))
    expected = "unknown checkpoint metadata.*sharpen" if change == "newer field" else "format version 99"
    with pytest.raises(CheckpointError, match=expected) as caught:
        OnnxRuntime(tmp_path / "newer.onnx")
    assert "braintumor export" in caught.value.hint


def test_the_exported_graph_is_cached_per_checkpoint_and_tta(tiny_checkpoint, monkeypatch):
    import braintumor.inference.export as export

    model, info = load_checkpoint(tiny_checkpoint)
    first = export.cached_onnx_bytes(tiny_checkpoint, model, info, tta=True)
    monkeypatch.setattr(export, "onnx_bytes", lambda *a: pytest.fail("exported again although cached"))
    assert export.cached_onnx_bytes(tiny_checkpoint, model, info, tta=True) == first
    with pytest.raises(pytest.fail.Exception):  # another tta setting is another graph
        export.cached_onnx_bytes(tiny_checkpoint, model, info, tta=False)


@pytest.mark.parametrize("size", [64, 72])  # at 72 px a stride-2 convolution sees an odd input (9 x 9)
def test_same_padding_becomes_constant_with_the_same_outputs(size):
    import torch
    from timm.layers.conv2d_same import Conv2dSame

    from braintumor.inference.export import static_same_padding
    from braintumor.model.factory import create_model
    from braintumor.data.preprocess import Preprocess

    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 4, Preprocess(image_size=size), pretrained=False).eval()
    static = static_same_padding(model, size)
    assert sum(isinstance(m, Conv2dSame) for m in model.modules()) == 5  # the original is left as it was
    assert not any(isinstance(m, Conv2dSame) for m in static.modules())
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(static(x), model(x), atol=1e-5)


def test_onnxruntime_fuses_the_padding_of_an_exported_tf_efficientnet(tmp_path):
    """The Lite0 graph, once onnxruntime has optimised it, has no Pad node left (the padding is
    inside the convolutions), and gives PyTorch's probabilities."""
    import onnx
    import onnxruntime as ort
    import torch

    from braintumor.model.checkpoint import ModelInfo
    from braintumor.data.classes import CLASSES
    from braintumor.model.factory import create_model
    from braintumor.data.preprocess import Preprocess

    torch.manual_seed(0)
    preprocess = Preprocess(image_size=64)
    model = create_model("tf_efficientnet_lite0", 4, preprocess, pretrained=False).eval()
    info = ModelInfo(classes=list(CLASSES), backbone="tf_efficientnet_lite0", preprocess=preprocess,
                     tta=True, tta_view=MirrorView(angle=8.0))
    data = onnx_bytes(model, info)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "Conv" in ops and "Pad" not in ops
    images = _images(4, seed=3)[:, :64, :64]
    expected = predict_images(model, images, tta=True, tta_view=info.tta_view)
    assert np.abs(OnnxRuntime(data, threads=1).run(images)[0] - expected).max() < 1e-4


def test_an_ensemble_exports_to_one_graph_that_computes_what_the_ensemble_computes(tiny_checkpoint, tmp_path):
    from synthetic import perturbed_copy

    from braintumor.model.checkpoint import save_checkpoint

    other = perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")
    _, info = load_checkpoint(tiny_checkpoint)
    images = _images(6, seed=21)
    out = export_onnx(tiny_checkpoint, tmp_path / "ensemble.onnx", members=[other])
    runtime = OnnxRuntime(out, threads=1)
    expected_probs, expected_scores = Predictor([tiny_checkpoint, other], runtime="torch").runtime.run(images)
    probs, scores = runtime.run(images, batch_size=4)
    alone = [Predictor(m, runtime="torch").runtime.run(images)[0] for m in (tiny_checkpoint, other)]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # two different networks
    assert np.abs(probs - expected_probs).max() < 1e-4 and np.abs(probs - (alone[0] + alone[1]) / 2).max() < 1e-4
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4)
    assert runtime.threshold == 1.0 and runtime.classes == info.classes and runtime.info.preprocess == info.preprocess
    members = runtime.info.extra["ensemble"]
    assert [m["model"] for m in members] == [str(tiny_checkpoint), str(other)]
    assert members[0]["temperature"] == info.temperature and runtime.info.metrics == {}
    # without one member's detector the graph scores NaN and rejects nothing, as the ensemble in PyTorch
    model, bare = load_checkpoint(other)
    bare.extra.pop("ood"), bare.arrays.clear()
    plain = save_checkpoint(tmp_path / "no-detector.safetensors", model, bare)
    runtime = OnnxRuntime(export_onnx(tiny_checkpoint, tmp_path / "e2.onnx", members=[plain]))
    assert runtime.threshold is None and np.isnan(runtime.run(images)[1]).all()


def test_export_command_with_several_models(tiny_checkpoint, tmp_path, capsys):
    from synthetic import perturbed_copy, tumor_slice

    other = perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")
    third = perturbed_copy(tiny_checkpoint, tmp_path / "third.safetensors", seed=2)
    for i in range(3):
        Image.fromarray(tumor_slice(i, np.random.default_rng(i), 128)).save(tmp_path / f"s{i}.png")
    # -m given three times keeps every model
    assert main(["export", "-m", str(tiny_checkpoint), "-m", str(other), "-m", str(third),
                 "--out", str(tmp_path / "e.onnx"), "-q"]) == 0
    exported = Predictor(tmp_path / "e.onnx")
    assert [m["model"] for m in exported.runtime.info.extra["ensemble"]] == [str(tiny_checkpoint), str(other), str(third)]
    slices = sorted(tmp_path.glob("s*.png"))
    reference = Predictor([tiny_checkpoint, other, third], runtime="torch").predict(slices)
    for a, b in zip(reference, exported.predict(slices)):
        assert a.path == b.path and a.label == b.label and a.accepted == b.accepted
        assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-4
    capsys.readouterr()
    assert main(["export", "-m", str(tiny_checkpoint), str(other), "--int8"]) != 0
    assert "--int8 exports one model" in capsys.readouterr().err
    small = tmp_path / "small.safetensors"
    from braintumor.model.checkpoint import ModelInfo, save_checkpoint
    from braintumor.model.factory import create_model
    from braintumor.data.preprocess import Preprocess

    pre = Preprocess(image_size=32)
    save_checkpoint(small, create_model(pretrained=False, preprocess=pre),
                    ModelInfo(classes=["glioma", "meningioma", "no_tumor", "pituitary"], backbone="tf_efficientnet_lite0", preprocess=pre))
    assert main(["export", "-m", str(tiny_checkpoint), "-m", str(small), "--out", str(tmp_path / "bad.onnx")]) != 0
    err = capsys.readouterr().err
    assert "cannot be averaged" in err and "Traceback" not in err and not (tmp_path / "bad.onnx").exists()
