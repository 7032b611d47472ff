import json

import numpy as np
import pytest

from braintumor.evaluate import classification_metrics, write_report

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
