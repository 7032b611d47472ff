import csv
import json

import numpy as np
import pytest

from braintumor.cli import main
from braintumor.errors import BrainTumorError
from braintumor.evaluation.label_issues import find_label_issues, leak_warnings, write_label_issues

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def confident_probs(true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A good model's out-of-sample probabilities: 0.75-0.97 on the true class, the rest spread."""
    probs = rng.dirichlet(np.ones(4), size=len(true))
    probs[np.arange(len(true)), true] = 0
    top = rng.uniform(0.75, 0.97, size=len(true))
    probs *= ((1 - top) / probs.sum(1))[:, None]
    probs[np.arange(len(true)), true] = top
    return probs


def test_planted_wrong_labels_are_flagged_and_the_models_own_errors_are_not():
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(4), 100)
    given = true.copy()
    picks = rng.permutation(np.flatnonzero(true == 0))
    flipped = np.concatenate([picks[:12], rng.choice(np.flatnonzero(true == 3), 6, replace=False)])
    given[flipped[:12]], given[flipped[12:]] = 1, 2  # glioma labelled meningioma, pituitary labelled no_tumor
    probs = confident_probs(true, rng)
    top = rng.uniform(0.9, 0.97, size=len(flipped))  # the model is sure of a wrongly labelled image's true class
    probs[flipped] *= ((1 - top) / (probs[flipped].sum(1) - probs[flipped, true[flipped]]))[:, None]
    probs[flipped, true[flipped]] = top
    hard = picks[12:22]  # right labels the model gets wrong, unsure: not label errors
    probs[hard] = [0.45, 0.5, 0.03, 0.02]
    sources = np.where(np.arange(400) % 4 == 0, "Testing", "Training").tolist()
    found = find_label_issues(given, probs, CLASSES, sources)

    assert sorted(found["issues"]) == sorted(flipped.tolist())  # every planted error, and nothing else
    assert found["model_errors"] == 28 and found["errors_flagged"] == 18 and found["accuracy"] == pytest.approx(372 / 400)
    # an estimate: each row of the joint is rescaled to its class's count, which inflates it a little here
    assert found["estimated_label_errors"] == pytest.approx(18, rel=0.25)
    assert found["joint"]["meningioma"]["glioma"] == pytest.approx(12, rel=0.25)  # given meningioma, truly glioma
    assert found["joint"]["no_tumor"]["pituitary"] == pytest.approx(6, rel=0.5)
    assert found["joint"]["glioma"]["meningioma"] == pytest.approx(0, abs=1)
    # its 95% interval holds the planted count and the estimate, and excludes no errors at all
    low, high = found["estimated_label_errors_ci"]
    assert 5 < low <= 18 <= high < 40 and low <= found["estimated_label_errors"] <= high
    assert found["estimated_error_rate_ci"] == pytest.approx([low / 400, high / 400])
    # copies resampled together: every image doubled, as pairs, is no more evidence than the images once
    twice = find_label_issues(np.repeat(given, 2), np.repeat(probs, 2, axis=0), CLASSES, groups=np.arange(800) // 2)
    low2, high2 = twice["estimated_error_rate_ci"]
    assert high2 - low2 == pytest.approx(high / 400 - low / 400, rel=0.3)
    low3, high3 = find_label_issues(np.repeat(given, 2), np.repeat(probs, 2, axis=0), CLASSES)["estimated_error_rate_ci"]
    assert high3 - low3 < 0.85 * (high2 - low2)  # counted one by one, copies would narrow it
    assert find_label_issues(given, probs, CLASSES, resamples=0)["estimated_label_errors_ci"] is None
    ranked = [found["label_quality"][i] for i in found["issues"]]
    assert ranked == sorted(ranked)  # least likely given label first
    assert found["per_class"]["meningioma"] == {"n": 112, "model_errors": 12, "flagged": 12}
    assert found["per_class"]["glioma"] == {"n": 88, "model_errors": 10, "flagged": 0}
    by_source = found["per_source"]
    assert by_source["Testing"]["n"] == 100 and by_source["Testing"]["flagged"] + by_source["Training"]["flagged"] == 18
    assert by_source["Testing"]["flagged"] == int(np.isin(flipped, np.arange(0, 400, 4)).sum())


def test_clean_labels_with_uncertain_model_give_few_flags():
    rng = np.random.default_rng(1)
    true = np.repeat(np.arange(4), 60)
    found = find_label_issues(true, confident_probs(true, rng), CLASSES)
    assert found["issues"] == [] and found["estimated_label_errors"] < 1 and found["per_source"] == {}
    assert found["estimated_label_errors_ci"][1] < 3


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        (np.zeros(3, int), np.full((3, 3), 1 / 3), r"probs must have shape \(N, 4\)"),
        (np.zeros(4, int), np.full((3, 4), 0.25), "labels must have one entry per row of probs"),
        (np.array([0, 1, 4]), np.full((3, 4), 0.25), "labels must be class indices 0..3"),
        (np.array([0.0, 1.0, 2.0]), np.full((3, 4), 0.25), "labels must be class indices"),
        (np.zeros(3, int), np.full((3, 4), 0.5), "each row summing to 1"),
    ],
)
def test_bad_arguments_name_what_is_wrong(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        find_label_issues(labels, probs, CLASSES)


def test_too_few_images_of_a_class_is_a_clear_error():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3] * 3)
    probs = np.eye(4)[labels] * 0.9 + 0.025
    with pytest.raises(BrainTumorError, match=r"pituitary \(3\); at least 5 of every class"):
        find_label_issues(labels, probs, CLASSES)


def test_runs_split_with_leaking_copies_are_warned_about():
    assert leak_warnings(["dedup", "dedup"]) == []
    (warning,) = leak_warnings(["dedup", "original", "official", "original"])
    assert "split under official and original" in warning and "not fully out-of-sample" in warning
    assert "--protocol dedup" in warning


def test_report_without_contact_sheet_lists_the_flags_and_links_no_picture(tmp_path):
    row = {"rank": 1, "path": "glioma/a.png", "source": "", "label": "glioma", "suggested": "meningioma",
           "p_label": 0.01, "p_suggested": 0.98}
    result = {"runs": ["r"], "data": str(tmp_path / "gone"), "classes": CLASSES, "warnings": [], "n": 40, "accuracy": 0.975,
              "model_errors": 1, "errors_flagged": 1, "estimated_label_errors": 1.0, "estimated_error_rate": 0.025,
              "joint": {g: {t: 0.0 for t in CLASSES} for g in CLASSES}, "per_class": {}, "per_source": {}, "issues": [row]}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "label_issues.png").write_bytes(b"an earlier report's sheet")
    report = write_label_issues(result, tmp_path / "out", sheet=0)  # the image is never read
    text = report.read_text()
    assert "`glioma/a.png`" in text and "label_issues.csv" in text and "label_issues.png" not in text
    assert not (tmp_path / "out" / "label_issues.png").exists()
    with open(tmp_path / "out" / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["corrected"]) for r in rows] == [("glioma/a.png", "")]  # the column a reviewer fills in
    assert "--relabel label_issues.csv" in text


@pytest.fixture
def crossval(tiny_crossval):
    """A 2-fold dedup cross-validation of one short epoch on the distinct tree (28 images)."""
    return tiny_crossval[0]


def test_cli_scores_every_crossval_image_once_and_writes_the_report(crossval, tmp_path, capsys):
    out = tmp_path / "issues"
    assert main(["label-issues", str(crossval), "--out", str(out), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    pooled = json.loads((crossval / "crossval.json").read_text())["pooled"]
    assert result["n"] == 28 == pooled["n"]  # the two test folds: every image once
    assert result["accuracy"] == pytest.approx(pooled["correct"] / 28)
    assert result["per_source"] == {"(no folder)": {"n": 28, "model_errors": result["model_errors"],
                                                    "flagged": len(result["issues"])}}
    assert len(result["runs"]) == 2 and result["report"] == str(out / "label_issues.md") and result["warnings"] == []
    assert sum(sum(row.values()) for row in result["joint"].values()) == pytest.approx(28)
    with open(out / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r["path"] for r in result["issues"]]
    for row in result["issues"]:
        assert row["path"].split("/")[0] == row["label"]  # relative to the data folder: <class>/<file>
    report = (out / "label_issues.md").read_text()
    assert "28 images" in report and "Estimated wrong labels" in report
    assert ((out / "label_issues.png").read_bytes()[:4] == b"\x89PNG") == bool(result["issues"])


def test_a_run_and_its_crossval_pool_by_image(crossval, tmp_path, capsys):
    # one fold alone has 3 or 4 images of each class: too few, a clear error before anything is written
    assert main(["label-issues", str(crossval / "fold1"), "--out", str(tmp_path / "a"), "-q"]) == 2
    assert "too few scored images to find label issues" in capsys.readouterr().err and not (tmp_path / "a").exists()
    # the fold scored twice (alone and within the cross-validation) still counts each image once
    assert main(["label-issues", str(crossval), str(crossval / "fold1"), "--out", str(tmp_path / "b"), "--json", "-q"]) == 0
    twice = json.loads(capsys.readouterr().out)
    assert main(["label-issues", str(crossval), "--out", str(tmp_path / "c"), "--json", "-q"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert twice["n"] == once["n"] == 28 and len(twice["runs"]) == 3
    as_array = [[[row[t] for t in CLASSES] for row in r["joint"].values()] for r in (twice, once)]
    assert np.allclose(*as_array) and twice["issues"] == once["issues"]


def test_cli_bad_folders_are_clear_errors(tmp_path, capsys):
    assert main(["label-issues", str(tmp_path), "-q"]) == 2
    assert "neither a run folder (no model.safetensors) nor a cross-validation" in capsys.readouterr().err
    (tmp_path / "crossval.json").write_text('{"runs": []}')
    assert main(["label-issues", str(tmp_path), "-q"]) == 2
    assert "lists no fold runs" in capsys.readouterr().err
    (tmp_path / "crossval.json").write_text('{"runs": ["gone/fold1"]}')
    assert main(["label-issues", str(tmp_path), "-q"]) == 2
    assert "no model.safetensors in" in capsys.readouterr().err
