"""Batch prediction: bad files in a batch give per-file errors and never stop the run, results
keep input order, DICOM frames are predicted one by one, and CSV/JSON carry the OOD decision."""

import csv
import io
import json
import struct
import zlib

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from braintumor.model.checkpoint import ModelInfo, save_checkpoint
from braintumor.cli import main
from braintumor.inference.forward import predict_images
from braintumor.model.factory import create_model
from braintumor.inference.predictor import Predictor, expand_inputs, write_csv
from braintumor.data.preprocess import Preprocess


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    pre = Preprocess(image_size=32)
    model = create_model(pretrained=False, preprocess=pre)
    info = ModelInfo(classes=["glioma", "meningioma", "no_tumor", "pituitary"], backbone="tf_efficientnet_lite0", preprocess=pre, tta=True)
    return save_checkpoint(tmp_path / "m.safetensors", model, info)


def test_tta_averages_image_and_mirror():
    torch.manual_seed(0)
    model = create_model(pretrained=False, drop_rate=0.0).eval()
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    plain = predict_images(model, images)
    mirrored = predict_images(model, images[:, :, ::-1].copy())
    both = predict_images(model, images, tta=True)
    logit = lambda p: np.log(p)  # noqa: E731 - log-probabilities differ from logits by a constant per row
    expected = torch.softmax(torch.tensor((logit(plain) + logit(mirrored)) / 2), 1).numpy()
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(both.sum(1), 1, atol=1e-6)


def test_tta_with_a_rotated_mirror_averages_image_and_that_view():
    from braintumor.model.factory import to_float
    from braintumor.model.views import MirrorView

    torch.manual_seed(0)
    model = create_model(pretrained=False, drop_rate=0.0).eval()
    images = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    view = MirrorView(angle=8.0)
    with torch.no_grad():
        x = to_float(torch.from_numpy(images))
        expected = torch.softmax((model(x) + model(view.apply(x))) / 2, 1).numpy()
    np.testing.assert_allclose(predict_images(model, images, tta=True, tta_view=view), expected, atol=1e-5)
    assert np.abs(predict_images(model, images, tta=True) - expected).max() > 1e-4  # not the plain mirror


def test_predictor_files_folders_and_errors(tmp_path, checkpoint):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (40, 40), 40 * i + 30).save(folder / f"s ({i}).png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    results = Predictor(checkpoint).predict([folder, empty, tmp_path / "missing.png"], batch_size=2)
    by_path = {r.path: r for r in results}
    assert len(results) == 6
    assert by_path[str(empty)].error.startswith("folder holds no")
    assert by_path[str(tmp_path / "missing.png")].error == "no such file or folder"
    assert "not an image" in by_path[str(folder / "broken.jpg")].error
    good = [r for r in results if r.error is None]
    assert len(good) == 3 and all(r.label in r.probabilities for r in good)


def test_expand_inputs_recurses_skips_hidden_and_reports_every_other_file(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "a" / "b" / "x.png")
    Image.new("L", (8, 8)).save(tmp_path / "a" / ".hidden.png")
    (tmp_path / "a" / "notes.txt").write_text("x")
    Image.new("L", (8, 8)).save(tmp_path / "a" / "anim.gif")
    (tmp_path / "a" / "brain.nii.gz").write_bytes(b"\x1f\x8b")
    files, errors = expand_inputs([tmp_path / "a"])
    assert [f.name for f in files] == ["x.png", "brain.nii.gz"]  # NIfTI volumes are read (issue 41)
    reasons = {Path(e.path).name: e.error for e in errors}
    assert set(reasons) == {"notes.txt", "anim.gif"}
    assert "not an image type" in reasons["notes.txt"] and "(.txt)" in reasons["notes.txt"]
    assert "GIF" in reasons["anim.gif"]
    assert all(r.startswith("skipped: ") for r in reasons.values())


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels but holds no image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def mixed_folder(tmp_path):
    """Good slices between every kind of bad file, named so that sorting interleaves them."""
    from synthetic import tumor_slice
    from dicomfiles import write_dicom

    rng = np.random.default_rng(0)
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(tumor_slice(i, rng, 128)).save(folder / f"{i}0-good.jpg", quality=92)
    (folder / "01-text.jpg").write_bytes(b"this is a text file, not a JPEG\n" * 10)
    full = io.BytesIO()
    Image.fromarray(tumor_slice(0, rng, 128)).save(full, "JPEG")
    (folder / "11-truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (folder / "21-zero.png").write_bytes(_png_header_only(0, 0))
    (folder / "31-huge.png").write_bytes(_png_header_only(100_000, 100_000))
    empty = write_dicom(folder / "32-report.dcm", np.zeros((4, 4), dtype=np.uint16))
    import pydicom

    ds = pydicom.dcmread(empty)
    del ds.PixelData
    ds.save_as(empty)
    (folder / "33-empty.png").write_bytes(b"")
    return folder


def test_bad_files_are_reported_and_skipped(tiny_checkpoint, mixed_folder):
    results = Predictor(tiny_checkpoint).predict([mixed_folder], batch_size=3)
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert [r.path for r in results] == sorted(r.path for r in results)  # input order kept
    expected_errors = {
        "01-text.jpg": "not an image",
        "11-truncated.jpg": "truncated",
        "21-zero.png": "",
        "31-huge.png": "too large",
        "32-report.dcm": "no pixel data",
        "33-empty.png": "empty file",
    }
    for name, reason in expected_errors.items():
        r = by_name[name]
        assert r.error and reason in r.error and r.label is None and not r.probabilities, (name, r)
    good = [r for r in results if not r.error]
    assert [r.top_class for r in good] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert all(r.accepted and r.ood_score is not None for r in good)


def test_multi_frame_dicom_gives_one_result_per_frame(tiny_checkpoint, tmp_path):
    from synthetic import tumor_slice
    from dicomfiles import write_dicom

    rng = np.random.default_rng(1)
    frames = np.stack([tumor_slice(label, rng, 128)[:, :, 0].astype(np.uint16) * 16 for label in (3, 1, 0)])
    path = write_dicom(tmp_path / "series.dcm", frames, WindowCenter=2040, WindowWidth=4080)
    predictor = Predictor(tiny_checkpoint)
    every = predictor.predict([path])
    assert [(r.frame, r.top_class) for r in every] == [(1, "pituitary"), (2, "meningioma"), (3, "glioma")]
    chosen = predictor.predict([path], frame=2)
    assert [(r.frame, r.top_class) for r in chosen] == [(2, "meningioma")]
    assert "no frame 9" in predictor.predict([path], frame=9)[0].error


def test_csv_has_one_row_per_result_with_the_ood_columns(tiny_checkpoint, mixed_folder, tmp_path):
    predictor = Predictor(tiny_checkpoint)
    results = predictor.predict([mixed_folder])
    write_csv(results, predictor.classes, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results)
    assert {"path", "label", "p_glioma", "p_pituitary", "ood_score", "accepted", "error"} <= set(rows[0])
    good = [row for row in rows if not row["error"]]
    assert all(row["accepted"] == "true" and float(row["ood_score"]) > 0 for row in good)
    assert all(abs(sum(float(row[f"p_{c}"]) for c in predictor.classes) - 1) < 1e-4 for row in good)


def test_predict_command_json_and_csv(tiny_checkpoint, mixed_folder, tmp_path, capsys):
    code = main(["predict", str(mixed_folder), "--model", str(tiny_checkpoint), "--json", "--csv", str(tmp_path / "r.csv"),
                 "--runtime", "onnx", "-q"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and len(rows) == 10 and (tmp_path / "r.csv").is_file()
    good = [r for r in rows if "error" not in r]
    assert all({"label", "probabilities", "ood_score", "accepted", "top_class"} <= set(r) for r in good)
    assert main(["predict", str(mixed_folder), "--model", str(tiny_checkpoint), "--csv", "-", "--no-tta", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("path,frame,label,top_class,p_glioma") and len(lines) == 11


def test_all_inputs_bad_exits_non_zero(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    assert main(["predict", str(tmp_path / "x.jpg"), "--model", str(tiny_checkpoint)]) == 3
    captured = capsys.readouterr()
    assert "not an image" in captured.out and "Traceback" not in captured.err


def _other_checkpoint(path, seed: int, temperature: float):
    torch.manual_seed(seed)
    pre = Preprocess(image_size=32)
    info = ModelInfo(classes=["glioma", "meningioma", "no_tumor", "pituitary"], backbone="tf_efficientnet_lite0", preprocess=pre,
                     tta=True, temperature=temperature)
    return save_checkpoint(path, create_model(pretrained=False, preprocess=pre), info)


def test_an_ensemble_averages_its_members_calibrated_probabilities(tmp_path, checkpoint):
    from braintumor.inference.runtime import EnsembleRuntime

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{i}.png")
    other = _other_checkpoint(tmp_path / "other.safetensors", seed=1, temperature=2.5)
    from braintumor.inference.export import export_onnx
    from braintumor.inference.runtime import OnnxRuntime

    other_onnx = export_onnx(other, tmp_path / "other.onnx")
    # torch: a runtime per member; onnx: one graph of both; a checkpoint and an .onnx file: a session each
    for runtime, members, kind in [("torch", [checkpoint, other], EnsembleRuntime), ("onnx", [checkpoint, other], OnnxRuntime),
                                   ("onnx", [checkpoint, other_onnx], EnsembleRuntime)]:
        alone = [np.array([list(r.probabilities.values()) for r in Predictor(m, runtime=runtime).predict([folder])])
                 for m in (checkpoint, other)]
        assert np.abs(alone[0] - alone[1]).max() > 1e-3  # two different models
        ensemble = Predictor(members, runtime=runtime)
        assert type(ensemble.runtime) is kind and ensemble.paths == members
        results = ensemble.predict([folder])
        mean = np.array([list(r.probabilities.values()) for r in results])
        np.testing.assert_allclose(mean, (alone[0] + alone[1]) / 2, atol=1e-5)
        assert [r.top_class for r in results] == [ensemble.classes[i] for i in mean.argmax(1)]
    assert [m["model"] for m in Predictor([checkpoint, other], runtime="onnx").runtime.info.extra["ensemble"]] == [
        str(checkpoint), str(other)]
    single = Predictor([checkpoint])  # a list of one is that model
    assert not isinstance(single.runtime, EnsembleRuntime) and single.model is not None


def test_an_ensembles_ood_score_is_the_mean_over_thresholds_and_mismatched_members_are_refused(
        tiny_checkpoint, checkpoint, mixed_folder, tmp_path):
    from braintumor.errors import BrainTumorError
    from braintumor.inference.predictor import no_detector_note

    for runtime in ("torch", "onnx"):  # onnx: one graph, built on first use (it once broke the members' detectors)
        alone = Predictor(tiny_checkpoint, runtime=runtime)
        twice = Predictor([tiny_checkpoint, tiny_checkpoint], runtime=runtime)
        assert twice.threshold == 1.0 and twice.member_thresholds == [alone.threshold] * 2
        assert no_detector_note(twice) is None
        for one, pair in zip(alone.predict([mixed_folder]), twice.predict([mixed_folder])):
            if one.error:
                assert pair.error == one.error
                continue
            assert pair.ood_score == pytest.approx(one.ood_score / alone.threshold, rel=1e-5)
            assert pair.accepted == one.accepted and pair.label == one.label
    # a member without a detector: nothing is rejected, and the note names that member
    other = _other_checkpoint(tmp_path / "no-ood.safetensors", seed=1, temperature=1.0)
    for runtime in ("torch", "onnx"):
        mixed = Predictor([checkpoint, other], runtime=runtime)
        assert mixed.threshold is None and "m.safetensors has no out-of-distribution statistics" in no_detector_note(mixed)
    assert "no-ood.safetensors has no" in no_detector_note(Predictor([other, checkpoint], runtime="onnx"))
    with pytest.raises(BrainTumorError, match="does not share the classes and preprocessing"):
        Predictor([tiny_checkpoint, checkpoint], runtime="torch")  # 128 px against 32 px


def test_predict_command_with_several_models_prints_the_ensembles_answer(checkpoint, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    other = _other_checkpoint(tmp_path / "other.safetensors", seed=1, temperature=2.5)
    assert main(["predict", str(image), "--model", str(checkpoint), "--model", str(other), "--runtime", "torch", "--json", "-q"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    expected = Predictor([checkpoint, other], runtime="torch").predict([image])[0].probabilities
    assert row["probabilities"] == pytest.approx(expected, abs=1e-9)


_PREDICT_IN_A_NEW_PROCESS = """
import json, sys
from braintumor.inference.predictor import Predictor
predictor = Predictor(sys.argv[1:-1], runtime="onnx")
result = predictor.predict([sys.argv[-1]])[0]
print(json.dumps({"probabilities": result.probabilities, "ood_score": result.ood_score,
                  "thresholds": predictor.member_thresholds,
                  "imported": [m for m in ("torch", "timm") if m in sys.modules]}))
"""


@pytest.mark.parametrize("members", [1, 2])
def test_a_cached_graph_predicts_without_importing_torch(tiny_checkpoint, tmp_path, members):
    import os
    import subprocess
    import sys

    from synthetic import perturbed_copy, tumor_slice

    models = [tiny_checkpoint, perturbed_copy(tiny_checkpoint, tmp_path / "other.safetensors")][:members]
    image = tmp_path / "slice.png"
    Image.fromarray(tumor_slice(2, np.random.default_rng(3), 128)).save(image)
    first = Predictor(models, runtime="onnx")  # the first use exports the graph (with PyTorch) and caches it
    expected = first.predict([image])[0]
    # BRAINTUMOR_CACHE (set for every test) carries the cache over to the new process
    done = subprocess.run([sys.executable, "-c", _PREDICT_IN_A_NEW_PROCESS, *map(str, models), str(image)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["imported"] == []
    assert got["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert got["ood_score"] == pytest.approx(expected.ood_score, rel=1e-5)
    assert got["thresholds"] == pytest.approx(first.member_thresholds) and None not in got["thresholds"]


def test_the_networks_load_when_asked_for(checkpoint):
    from braintumor.model.checkpoint import load_checkpoint

    Predictor(checkpoint, runtime="onnx")  # caches the graph
    predictor = Predictor(checkpoint, runtime="onnx")
    loaded, _ = load_checkpoint(checkpoint)
    state = predictor.model.state_dict()
    assert state.keys() == loaded.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())
    assert predictor.models[0] is predictor.model  # loaded once
    assert Predictor([checkpoint, checkpoint], runtime="onnx").model is None  # an ensemble has no single network


def test_a_first_export_is_announced_and_the_models_own_tta_spelled_out_reuses_its_graph(checkpoint, capsys):
    from braintumor.data.dataset import cache_dir

    def graphs() -> int:
        return len(list((cache_dir() / "onnx").glob("*.onnx")))

    Predictor(checkpoint, runtime="onnx", progress=True)
    assert "exporting m.safetensors to ONNX" in capsys.readouterr().err and graphs() == 1
    Predictor(checkpoint, runtime="onnx", tta=True, progress=True)  # the checkpoint's own setting
    assert capsys.readouterr().err == "" and graphs() == 1
    Predictor(checkpoint, runtime="onnx", tta=False)
    assert graphs() == 2


def test_predict_command_refuses_empty_input_before_loading_a_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    # the model does not exist either: the inputs are checked first, so their error is the one shown
    assert main(["predict", str(tmp_path / "empty"), "--model", str(tmp_path / "missing.safetensors")]) != 0
    err = capsys.readouterr().err
    assert "nothing to predict" in err and "missing.safetensors" not in err
