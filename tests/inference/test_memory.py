"""Predicting from bytes, PIL images and arrays (`braintumor.inference.memory`): the same record
as predicting the file, types told from the content, and the prediction path free of PyTorch."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.errors import ImageError, UnsupportedImageError
from braintumor.inference import Predictor
from braintumor.inference import memory
from dicomfiles import write_dicom
from synthetic import tumor_slice


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("memory_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINTUMOR_CACHE", str(cache))
        loaded = Predictor(tiny_checkpoint, threads=1)
    loaded.cache = cache
    return loaded


def same_record(a, b) -> bool:
    """Two predictions agree: every field, the numbers to float precision."""
    a, b = a.to_dict(), b.to_dict()
    numbers = [(a.pop(key, None), b.pop(key, None)) for key in ("probabilities", "ood_score")]
    return a == b and all(x == pytest.approx(y, abs=1e-5) for x, y in numbers)


def slice_rgb(label: int = 0, seed: int = 0) -> np.ndarray:
    return tumor_slice(label, np.random.default_rng(seed), 128)


def encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_bytes_give_the_record_of_the_file(predictor, tmp_path, fmt):
    data = encoded(slice_rgb(label=3, seed=1), fmt)
    path = tmp_path / f"slice.{fmt.lower()}"
    path.write_bytes(data)
    (from_file,) = predictor.predict([path])
    (from_bytes,) = memory.predict_bytes(predictor, data, name=str(path))
    assert same_record(from_bytes, from_file)


def test_pil_image_and_array_give_the_same_record(predictor):
    rgb = slice_rgb(label=0)
    from_array = memory.predict_array(predictor, rgb, name="x")
    assert memory.predict_image(predictor, Image.fromarray(rgb), name="x").to_dict() == from_array.to_dict()
    assert from_array.label == "glioma" and from_array.accepted is True
    # grayscale, H x W x 1 and 16-bit arrays are read as the files of those kinds are
    gray = rgb[:, :, 0]
    assert memory.predict_array(predictor, gray, "x").to_dict() == from_array.to_dict()
    assert memory.predict_array(predictor, gray[:, :, None], "x").to_dict() == from_array.to_dict()
    wide = memory.predict_array(predictor, gray.astype(np.uint16) * 257, "x")
    assert wide.probabilities == pytest.approx(from_array.probabilities, abs=1e-3)


@pytest.mark.parametrize("array", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 5), np.uint8),
                                   np.full((8, 8), np.nan), np.zeros((2, 8, 8, 3), np.uint8), np.array([["a"]])])
def test_bad_arrays_are_refused(predictor, array):
    with pytest.raises(ImageError):
        memory.predict_array(predictor, array)


def test_type_comes_from_the_content(predictor):
    with pytest.raises(UnsupportedImageError, match="not a JPEG, PNG, BMP, TIFF"):
        memory.predict_bytes(predictor, b"hello, not an image", name="scan.png")
    with pytest.raises(UnsupportedImageError):
        memory.predict_bytes(predictor, encoded(slice_rgb(), "GIF"), name="scan.jpg")
    with pytest.raises(ImageError, match="truncated"):
        memory.predict_bytes(predictor, encoded(slice_rgb(), "JPEG")[:400])
    with pytest.raises(ImageError, match="empty"):
        memory.predict_bytes(predictor, b"")


def test_dicom_bytes_every_frame_or_one(predictor, tmp_path):
    frames = np.stack([slice_rgb(label=i, seed=i)[:, :, 0] for i in range(3)])
    data = write_dicom(tmp_path / "series.dcm", frames, NumberOfFrames=3).read_bytes()
    every = memory.predict_bytes(predictor, data, "series")
    assert [r.frame for r in every] == [1, 2, 3]
    (second,) = memory.predict_bytes(predictor, data, "series", frame=2)
    assert same_record(second, every[1])
    from_file = predictor.predict([tmp_path / "series.dcm"])
    for a, b in zip(from_file, every, strict=True):
        b.path = a.path
        assert same_record(a, b)
    with pytest.raises(ImageError, match="more than 2 frames"):
        memory.predict_bytes(predictor, data, max_frames=2)


def test_explain_bytes_heatmap_where_the_evidence_is(predictor):
    explained = memory.explain_bytes(predictor, encoded(slice_rgb(label=0), "PNG"), "x")
    (e,) = explained
    assert e.target == e.prediction.top_class == "glioma"
    assert e.image.shape == (128, 128, 3) and e.heatmap.shape == (128, 128)
    assert 0 <= e.heatmap.min() and e.heatmap.max() <= 1
    assert e.heatmap[:64, :64].mean() > e.heatmap[64:, 64:].mean()  # the glioma blob's quadrant
    (other,) = memory.explain_bytes(predictor, encoded(slice_rgb(label=0), "PNG"), "x", target="pituitary")
    assert other.target == "pituitary" and other.prediction.label == "glioma"
    rgba = memory.heatmap_rgba(e.heatmap)
    assert rgba.shape == (128, 128, 4) and rgba.dtype == np.uint8
    assert memory.overlay(e.image, e.heatmap).shape == (128, 128, 3)
    assert Image.open(io.BytesIO(memory.png_bytes(rgba))).mode == "RGBA"


def test_warnings_say_why_an_image_is_rejected(predictor):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    rejected = memory.predict_array(predictor, noise)
    assert rejected.label == "not_brain_mri"
    assert any("does not look like a brain MRI" in w for w in memory.result_warnings(predictor, rejected))
    assert memory.result_warnings(predictor, memory.predict_array(predictor, slice_rgb())) == []


def test_prediction_from_bytes_imports_no_torch(predictor, tiny_checkpoint, tmp_path):
    """With the ONNX graph cached, predicting from bytes needs neither torch nor timm."""
    image = tmp_path / "slice.png"
    image.write_bytes(encoded(slice_rgb(), "PNG"))
    code = (
        "import sys\n"
        "from braintumor.inference import Predictor\n"
        "from braintumor.inference.memory import predict_bytes\n"
        f"p = Predictor({str(tiny_checkpoint)!r})\n"
        f"r = predict_bytes(p, open({str(image)!r}, 'rb').read())\n"
        "print(r[0].label, 'torch' in sys.modules, 'timm' in sys.modules)\n"
    )
    env = {**os.environ, "BRAINTUMOR_CACHE": str(predictor.cache)}
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["glioma", "False", "False"]


def test_predictor_methods_are_the_memory_functions(predictor):
    rgb = slice_rgb(label=3, seed=4)
    (from_bytes,) = predictor.predict_bytes(encoded(rgb, "PNG"), "x")
    assert same_record(from_bytes, memory.predict_bytes(predictor, encoded(rgb, "PNG"), "x")[0])
    assert same_record(predictor.predict_image(Image.fromarray(rgb), "x"), from_bytes)
    assert same_record(predictor.predict_array(rgb, "x"), from_bytes)
