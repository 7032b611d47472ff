import json

import numpy as np
import pytest

from braintumor.evaluation.evaluator import classification_metrics, write_report

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def test_metrics_against_hand_computed_case():
    labels = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 1, 1, 2, 3, 0])
    probs = np.full((6, 4), 0.1)
    probs[np.arange(6), pred] = 0.7
    m = classification_metrics(labels, probs, CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["correct"] == 4
    # glioma: predicted 0 at rows 0 and 5 -> precision 1/2, recall 1/2
    assert m["per_class"]["glioma"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["meningioma"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["meningioma"]["precision"] == pytest.approx(0.5)
    f1 = [0.5, 2 / 3, 1.0, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    expected_loss = -np.mean(np.log([0.7, 0.1, 0.7, 0.7, 0.7, 0.1]))
    assert m["loss"] == pytest.approx(expected_loss)


def test_macro_f1_of_a_one_class_folder_averages_the_classes_that_occur():
    # 10 pituitary images, 9 right and one called meningioma: F1 of pituitary 18/19, of
    # meningioma 0; glioma and no_tumor occur nowhere and do not count
    labels = np.full(10, 3)
    pred = np.array([3] * 9 + [1])
    m = classification_metrics(labels, np.eye(4)[pred] * 0.9 + 0.025, CLASSES)
    assert m["macro_f1"] == pytest.approx((18 / 19 + 0) / 2)
    assert m["per_class"]["glioma"]["support"] == 0
    perfect = classification_metrics(labels, np.eye(4)[labels], CLASSES)
    assert perfect["macro_f1"] == 1.0 and perfect["macro_f1_ci"] == [1.0, 1.0]


def test_bad_shapes():
    with pytest.raises(ValueError, match="N x C"):
        classification_metrics(np.array([0, 1]), np.zeros((3, 4)), CLASSES)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics(np.array([], dtype=int), np.zeros((0, 4)), CLASSES)


def test_report_links_its_files(tmp_path):
    labels = np.array([0, 1, 2, 3])
    m = classification_metrics(labels, np.eye(4), CLASSES)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_acc": 0.5, "val_acc": 0.6}]
    path = write_report(tmp_path, m, CLASSES, [("a/b c.jpg", "empty file (0 bytes)")], history, context={"protocol": "original"})
    text = path.read_text()
    for name in ("confusion_matrix.png", "confusion_matrix.json", "curves.png", "metrics.jsonl"):
        assert name in text
    assert "Skipped files: 1" in text and "b c.jpg" in text and "100.00%" in text
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "skipped.json").read_text())[0]["reason"].startswith("empty")


def test_metrics_carry_intervals_auc_and_calibration():
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 4
    logits = rng.normal(0, 1, (80, 4))
    logits[np.arange(80), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(labels, probs, CLASSES)
    for key in ("accuracy", "macro_f1"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi and hi - lo < 0.4
    from braintumor.metrics.calibration import expected_calibration_error
    from braintumor.metrics.stats import one_vs_rest_auc

    assert m["ece"] == pytest.approx(expected_calibration_error(probs, labels))
    assert m["ece_ci"][0] <= m["ece"] <= m["ece_ci"][1]
    assert 0 < m["ece_if_calibrated"]["mean"] < m["ece_if_calibrated"]["p95"]
    assert [m["per_class"][c]["roc_auc"] for c in CLASSES] == pytest.approx(one_vs_rest_auc(labels, probs))
    assert m["macro_roc_auc"] == pytest.approx(np.mean(one_vs_rest_auc(labels, probs)))
    assert sum(b["count"] for b in m["calibration_bins"]) == 80


def test_report_shows_intervals_auc_and_reliability_diagram(tmp_path):
    labels = np.array([0, 1, 2, 3, 0, 1])
    probs = np.full((6, 4), 0.1)
    probs[np.arange(6), [0, 1, 2, 3, 1, 1]] = 0.7
    m = classification_metrics(labels, probs, CLASSES)
    m.update(temperature=0.5, ece_uncalibrated=0.2)
    text = write_report(tmp_path, m, CLASSES, []).read_text()
    assert "95% CI" in text and "ROC-AUC" in text and "reliability.png" in text and "T = 0.500" in text
    assert "a perfectly calibrated model with these confidences would measure" in text
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_intervals_resample_the_groups_they_are_given(tmp_path):
    # 40 distinct images (30 right), each present as 3 copies: grouped, the copies are one test case.
    labels = np.arange(40) % 4
    pred = np.where(np.arange(40) < 30, labels, (labels + 1) % 4)
    probs = np.full((40, 4), 0.1)
    probs[np.arange(40), pred] = 0.7
    copies = np.repeat(np.arange(40), 3)
    one_by_one = classification_metrics(labels[copies], probs[copies], CLASSES)
    grouped = classification_metrics(labels[copies], probs[copies], CLASSES, groups=copies)
    distinct = classification_metrics(labels, probs, CLASSES)
    assert one_by_one["ci_groups"] is None and grouped["ci_groups"] == 40
    assert grouped["accuracy"] == one_by_one["accuracy"] == 0.75
    for key in ("accuracy_ci", "macro_f1_ci", "ece_ci"):
        assert grouped[key] == pytest.approx(distinct[key])
    assert grouped["ece_if_calibrated"] == pytest.approx(distinct["ece_if_calibrated"])
    assert grouped["ece_if_calibrated"]["mean"] > 1.4 * one_by_one["ece_if_calibrated"]["mean"]
    width = lambda m: m["accuracy_ci"][1] - m["accuracy_ci"][0]  # noqa: E731
    assert width(grouped) > 1.4 * width(one_by_one)
    text = write_report(tmp_path, grouped, CLASSES, []).read_text()
    assert "40 near-duplicate groups" in text and "right or wrong together" in text


def _test_predictions(pred, labels, paths=None, groups=None, classes=CLASSES):
    from types import SimpleNamespace

    from braintumor.evaluation.evaluator import TestPredictions

    probs = np.full((len(pred), 4), 0.1)
    probs[np.arange(len(pred)), pred] = 0.7
    paths = paths or [f"img{k}.png" for k in range(len(pred))]
    groups = np.arange(len(pred)) if groups is None else groups
    return TestPredictions(probs, np.asarray(labels), paths, groups, SimpleNamespace(classes=classes), {}, [])


def test_paired_comparison_counts_the_images_only_one_model_gets_right(tmp_path):
    from braintumor.errors import DataError
    from braintumor.evaluation.evaluator import paired_comparison

    labels = np.arange(40) % 4
    this = np.where(np.arange(40) < 36, labels, (labels + 1) % 4)  # 36 right
    other = np.where((np.arange(40) < 30) | (np.arange(40) >= 38), labels, (labels + 2) % 4)  # 32 right
    result = paired_comparison(_test_predictions(this, labels), _test_predictions(other, labels), "b.safetensors")
    assert result["model"] == "b.safetensors" and result["correct"] == 32 and result["accuracy"] == pytest.approx(0.8)
    assert result["difference"] == pytest.approx(0.1)
    assert result["only_this_right"] == 6 and result["only_other_right"] == 2  # images 30-35 and 38-39
    assert result["difference_ci"][0] <= 0.1 <= result["difference_ci"][1]
    m = classification_metrics(labels, _test_predictions(this, labels).probs, CLASSES, groups=np.arange(40))
    m["against"] = result
    text = write_report(tmp_path, m, CLASSES, []).read_text()
    assert "## Against `b.safetensors`" in text and "+10.00 points" in text and "Right only here: 6" in text
    with pytest.raises(DataError, match="other test images"):
        paired_comparison(_test_predictions(this, labels), _test_predictions(other[:39], labels[:39]), "c")
    with pytest.raises(DataError, match="other classes"):
        paired_comparison(_test_predictions(this, labels), _test_predictions(other, labels, classes=CLASSES[::-1]), "d")


def test_accuracy_by_source_folder_is_counted_per_folder_and_reported(tmp_path):
    from braintumor.evaluation.evaluator import metrics_by_source

    labels = np.arange(40) % 4
    sources = ["Testing"] * 10 + ["Training"] * 30
    pred = labels.copy()
    pred[[0, 1, 4]] = (labels[[0, 1, 4]] + 1) % 4  # three Testing errors: two glioma, one meningioma
    pred[20] = (labels[20] + 1) % 4  # one Training error, a glioma
    probs = _test_predictions(pred, labels).probs
    by = metrics_by_source(labels, probs, sources, CLASSES, groups=np.arange(40))
    assert list(by) == ["Training", "Testing"]  # Training first, whatever the order of the images
    assert by["Testing"]["n"] == 10 and by["Testing"]["correct"] == 7 and by["Testing"]["accuracy"] == pytest.approx(0.7)
    assert by["Training"]["correct"] == 29
    assert by["Testing"]["recall"]["glioma"] == pytest.approx(1 / 3)  # images 0, 4, 8: two wrong
    assert by["Testing"]["recall"]["meningioma"] == pytest.approx(2 / 3)  # images 1, 5, 9
    lo, hi = by["Testing"]["accuracy_ci"]
    assert lo < 0.7 < hi and hi - lo > by["Training"]["accuracy_ci"][1] - by["Training"]["accuracy_ci"][0]
    assert metrics_by_source(labels, probs, ["Training"] * 40, CLASSES) == {}  # one folder: nothing to split
    m = classification_metrics(labels, probs, CLASSES)
    m["by_source"] = by
    text = write_report(tmp_path, m, CLASSES, []).read_text()
    assert "## By source folder" in text and "| Testing | 10 | 7 | 70.00%" in text


def test_report_predictions_splits_the_test_set_by_folder(tmp_path):
    from braintumor.evaluation.evaluator import report_predictions

    labels = np.arange(20) % 4
    test = _test_predictions(labels, labels)
    test.info.temperature = 1.0
    test.context.update({"protocol": "dedup", "split seed": 0})
    test.sources = ["Training"] * 12 + ["Testing"] * 8
    metrics = report_predictions(test, tmp_path)
    assert metrics["by_source"]["Testing"]["n"] == 8 and metrics["by_source"]["Training"]["accuracy"] == 1.0
    assert "## By source folder" in (tmp_path / "report.md").read_text()
