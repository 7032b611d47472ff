"""Grad-CAM: on images whose class is decided by a bright blob in one quadrant, the heatmap of a
tiny trained model peaks in that quadrant; PNGs are written per image, bad files are reported."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.model.checkpoint import load_checkpoint
from braintumor.cli import main
from braintumor.inference.explain import explain_files, gradcam, gradcam_layer
from braintumor.inference.predictor import Predictor


def _quadrant(heatmap: np.ndarray) -> int:
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    h, w = heatmap.shape
    return 2 * int(y >= h / 2) + int(x >= w / 2)


def test_heatmap_peak_falls_in_the_blobs_quadrant(tiny_checkpoint):
    from synthetic import tumor_slice

    model, info = load_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(11)
    labels = [(0, 1, 3)[i % 3] for i in range(21)]  # the classes with a blob
    images = np.stack([info.preprocess(tumor_slice(label, rng)) for label in labels])
    heatmaps = gradcam(model, images, labels)
    assert heatmaps.shape == (21, 128, 128) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    hits = [_quadrant(h) == label for h, label in zip(heatmaps, labels)]
    assert np.mean(hits) >= 0.9, hits


def test_gradcam_reads_the_last_stride_16_stage(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    assert gradcam_layer(model) is model.net.blocks[3]  # test_efficientnet: 8 x 8 cells at 128 px


def test_gradcam_validates_its_input(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    with pytest.raises(ValueError, match="uint8"):
        gradcam(model, np.zeros((1, 32, 32, 3), dtype=np.float32), [0])
    with pytest.raises(ValueError, match="one class per image"):
        gradcam(model, np.zeros((2, 32, 32, 3), dtype=np.uint8), [0])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])  # Grad-CAM reads the torch model whichever runtime predicts
def test_explain_files_writes_one_png_per_image_and_reports_bad_files(tiny_checkpoint, tmp_path, runtime):
    from synthetic import tumor_slice

    rng = np.random.default_rng(3)
    Image.fromarray(tumor_slice(2, rng)).save(tmp_path / "slice.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    predictor = Predictor(tiny_checkpoint, runtime=runtime)
    rows = explain_files(predictor, [tmp_path / "slice.png", tmp_path / "broken.jpg"], tmp_path / "out")
    good, bad = rows
    assert good["label"] == "no_tumor" and 0 < good["probability"] <= 1 and good["accepted"] is True
    with Image.open(good["png"]) as png:
        assert png.format == "PNG" and png.size[0] > 400
    assert bad["path"].endswith("broken.jpg") and "error" in bad


def test_explain_command(tiny_checkpoint, tmp_path, capsys):
    from synthetic import tumor_slice

    Image.fromarray(tumor_slice(1, np.random.default_rng(5))).save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "cams"),
                 "--target", "glioma", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "a_gradcam.png" in out and "glioma" in out
    assert (tmp_path / "cams" / "a_gradcam.png").is_file()
    assert main(["explain", str(tmp_path / "a.png"), "--model", str(tiny_checkpoint), "--target", "cat"]) != 0
    assert "unknown target class" in capsys.readouterr().err


def test_explain_files_needs_the_pytorch_checkpoint(tiny_checkpoint, tmp_path):
    from braintumor.errors import BrainTumorError
    from braintumor.inference.export import export_onnx

    onnx_file = export_onnx(tiny_checkpoint, tmp_path / "tiny.onnx")
    with pytest.raises(BrainTumorError, match="Grad-CAM needs the PyTorch model"):
        explain_files(Predictor(onnx_file), [tmp_path], tmp_path / "out")


def test_an_ensemble_is_explained_by_its_class_and_the_mean_of_its_members_heatmaps(tiny_checkpoint, tmp_path):
    from synthetic import perturbed_copy, tumor_slice

    from braintumor.inference.explain import ensemble_gradcam

    other = perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")
    a, info = load_checkpoint(tiny_checkpoint)
    b, _ = load_checkpoint(other)
    rng = np.random.default_rng(7)
    images = np.stack([info.preprocess(tumor_slice(label, rng)) for label in (0, 1, 3)])
    targets = [0, 1, 3]
    alone = [gradcam(m, images, targets) for m in (a, b)]
    assert np.abs(alone[0] - alone[1]).max() > 0.05  # two different networks
    mean = (alone[0] + alone[1]) / 2
    expected = mean / mean.max(axis=(1, 2), keepdims=True)
    heatmaps = ensemble_gradcam([a, b], images, targets)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)
    assert heatmaps.dtype == np.float32 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
    np.testing.assert_allclose(ensemble_gradcam([a, a], images, targets), alone[0], atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_gradcam([], images, targets)

    Image.fromarray(tumor_slice(1, rng)).save(tmp_path / "slice.png")
    ensemble = Predictor([tiny_checkpoint, other], runtime="torch")
    (row,) = explain_files(ensemble, [tmp_path / "slice.png"], tmp_path / "out")
    (predicted,) = ensemble.predict([tmp_path / "slice.png"])
    assert row["label"] == predicted.top_class and row["probability"] == pytest.approx(predicted.probabilities[row["label"]])
    assert row["ood_score"] == pytest.approx(predicted.ood_score)
    assert Image.open(row["png"]).format == "PNG"


def test_explain_command_with_several_models(tiny_checkpoint, tmp_path, capsys):
    from synthetic import perturbed_copy, tumor_slice

    other = perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")
    Image.fromarray(tumor_slice(3, np.random.default_rng(9))).save(tmp_path / "b.png")
    code = main(["explain", str(tmp_path / "b.png"), "--model", str(tiny_checkpoint), "--model", str(other),
                 "--out", str(tmp_path / "cams"), "--json", "-q"])
    (row,) = json.loads(capsys.readouterr().out)
    (expected,) = Predictor([tiny_checkpoint, other], runtime="torch").predict([tmp_path / "b.png"])
    assert code == 0 and row["label"] == expected.top_class and Path(row["png"]).is_file()
    from braintumor.inference.export import export_onnx

    onnx_file = export_onnx(other, tmp_path / "other.onnx")
    assert main(["explain", str(tmp_path / "b.png"), "--model", str(tiny_checkpoint), "--model", str(onnx_file)]) != 0
    assert "Grad-CAM needs the PyTorch model" in capsys.readouterr().err
