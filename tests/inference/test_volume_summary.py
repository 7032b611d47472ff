"""The per-volume summary of a NIfTI volume's slice predictions (class with the most confident
tumour slices, slices per class, the slices that drove it, flagged as slice-level evidence), and
NIfTI volumes predicted end to end: files, folders, ``predict`` (table and JSON), ``explain`` and
bytes in memory. Synthetic volumes only."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import nibabel as nib
import numpy as np
import pytest

from synthetic import tumor_slice

from braintumor.cli import main
from braintumor.inference import Prediction, Predictor, summarise_volume, summarise_volumes
from braintumor.inference.volume import format_numbers

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def slice_record(number: int, label: str, p: float, accepted: bool | None = True, slices: int = 30) -> Prediction:
    rest = (1 - p) / 3
    probabilities = {c: (p if c == label else rest) for c in CLASSES}
    return Prediction("vol.nii.gz", label=label if accepted is not False else "not_brain_mri",
                      probabilities=probabilities, frame=number, top_class=label, accepted=accepted,
                      axis=2, slices=slices)


def test_the_class_with_most_confident_tumour_slices_leads():
    records = [slice_record(1, "no_tumor", 0.99), slice_record(2, "glioma", 0.95), slice_record(3, "glioma", 0.85),
               slice_record(4, "meningioma", 0.99), slice_record(5, "glioma", 0.5),  # not confident
               slice_record(6, "pituitary", 0.99, accepted=False)]  # rejected: no evidence
    summary = summarise_volume(records)
    assert summary.label == "glioma" and summary.evidence_slices == [2, 3]
    assert summary.class_counts == {"glioma": 3, "meningioma": 1, "no_tumor": 1, "pituitary": 0, "not_brain_mri": 1}
    assert summary.predicted == 6 and summary.skipped == 24 and summary.axis == 2
    assert "slice-level evidence, not a diagnosis" in summary.text and "slices 2-3" in summary.text
    assert "24 skipped" in summary.text
    assert summary.to_dict()["notice"] == "slice-level evidence, not a diagnosis"


def test_a_tie_goes_to_the_more_probable_slices_and_evidence_is_most_probable_first():
    records = [slice_record(7, "meningioma", 0.9), slice_record(8, "pituitary", 0.97), slice_record(9, "meningioma", 0.99),
               slice_record(10, "pituitary", 0.98)]
    summary = summarise_volume(records)
    assert summary.label == "pituitary" and summary.evidence_slices == [10, 8]
    assert summarise_volume(records, confidence=0.99).label == "meningioma"


def test_no_confident_tumour_slice_all_rejected_or_nothing():
    quiet = summarise_volume([slice_record(1, "no_tumor", 0.9), slice_record(2, "glioma", 0.6)])
    assert quiet.label == "no_tumor" and quiet.evidence_slices == [] and "no slice shows a tumour class" in quiet.text
    rejected = summarise_volume([slice_record(1, "glioma", 0.99, accepted=False)])
    assert rejected.label == "not_brain_mri"
    no_detector = summarise_volume([slice_record(1, "glioma", 0.99, accepted=None)])
    assert no_detector.label == "glioma"
    empty = summarise_volume([Prediction("vol.nii", error="truncated")])
    assert empty.label is None and empty.predicted == 0


def test_summarise_volumes_groups_the_slices_of_each_volume_only():
    rows = [Prediction("a.png", label="glioma", probabilities={"glioma": 1.0}),
            Prediction("x.dcm", label="glioma", probabilities={"glioma": 1.0}, frame=2),
            slice_record(3, "glioma", 0.9), slice_record(4, "glioma", 0.9)]
    rows.append(Prediction("other.nii", label="no_tumor", probabilities={c: 0.25 for c in CLASSES}, frame=1, axis=0, slices=1))
    summaries = summarise_volumes(rows)
    assert [s.path for s in summaries] == ["vol.nii.gz", "other.nii"]
    assert summaries[0].predicted == 2 and summaries[1].skipped == 0


def test_format_numbers():
    assert format_numbers([9, 3, 4, 5, 11, 12]) == "3-5, 9, 11-12" and format_numbers([]) == ""


# -- end to end with the tiny trained model (the class is the blob's quadrant)

def volume_of(images: list[np.ndarray]) -> np.ndarray:
    """A RAS volume whose axial slices, shown radiologically, are `images` (gray, S x S), with two
    empty slices before and after."""
    size = images[0].shape[0]
    planes = [np.zeros((size, size))] * 2 + [img[::-1, ::-1].T for img in images] + [np.zeros((size, size))] * 2
    return np.stack(planes, axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def glioma_volume(tmp_path_factory):
    """8 glioma slices (numbers 3..10) between 2 empty slices at each end, as .nii.gz in a folder."""
    rng = np.random.default_rng(3)
    images = [tumor_slice(0, rng)[:, :, 0].astype(float) for _ in range(8)]
    folder = tmp_path_factory.mktemp("volumes")
    path = folder / "glioma.nii.gz"
    nib.save(nib.Nifti1Image(volume_of(images), np.eye(4)), str(path))
    return path


def test_a_volume_is_predicted_slice_by_slice_from_a_file_or_a_folder(tiny_checkpoint, glioma_volume):
    predictor = Predictor(tiny_checkpoint, runtime="torch")
    results = predictor.predict([glioma_volume.parent])
    assert all(r.error is None for r in results)
    assert [r.frame for r in results] == list(range(3, 11)) and {r.axis for r in results} == {2}
    assert {r.slices for r in results} == {12}
    summary = summarise_volumes(results)[0]
    assert summary.skipped == 4 and summary.predicted == 8
    assert summary.label == "glioma" and len(summary.evidence_slices) >= 6
    assert [r.frame for r in predictor.predict([glioma_volume], frame=5)] == [5]
    assert len(predictor.predict([glioma_volume], axis=0)) > 0  # another axis: other slices


def test_predict_cli_prints_a_summary_line_and_json_volumes(tiny_checkpoint, glioma_volume, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["predict", str(glioma_volume), "-m", str(tiny_checkpoint), "-q", "--runtime", "torch"])
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "[slice 3]" in text and f"volume {glioma_volume}: glioma" in text and "not a diagnosis" in text
    out = io.StringIO()
    series = tmp_path / "series.nii"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4, 2), np.float32), np.eye(4)), str(series))
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = main(["predict", str(glioma_volume), str(series), "-m", str(tiny_checkpoint), "-q", "--json",
                     "--runtime", "torch"])
    assert code == 0
    record = json.loads(out.getvalue())
    assert len(record["predictions"]) == 9 and record["volumes"][0]["label"] == "glioma"
    assert record["predictions"][-1]["error"].startswith("a 4-D series of 2 volumes")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = main(["predict", str(series), "-m", str(tiny_checkpoint), "-q", "--runtime", "torch"])
    assert code == 3 and "error: a 4-D series" in out.getvalue() and "volume " not in out.getvalue()


def test_explain_a_slice_and_predict_volume_bytes(tiny_checkpoint, glioma_volume, tmp_path):
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = main(["explain", str(glioma_volume), "-m", str(tiny_checkpoint), "-o", str(tmp_path / "cams"),
                     "--frame", "6", "-q", "--json"])
    assert code == 0
    [row] = json.loads(out.getvalue())
    assert row["frame"] == 6 and row["axis"] == 2 and row["png"].endswith("glioma_slice6_gradcam.png")
    predictor = Predictor(tiny_checkpoint, runtime="torch")
    records = predictor.predict_bytes(glioma_volume.read_bytes(), "upload.nii.gz")
    assert [r.frame for r in records] == list(range(3, 11))
