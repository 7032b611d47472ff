import json

import numpy as np
import pytest

from braintumor.fundamentals.lessons import mri_from_scratch as mfs
from braintumor.fundamentals.lessons import run_lesson


def test_cnn_beats_chance_and_reads_transfer_results(tmp_path, mri_tree, private_cache):
    transfer = tmp_path / "train_accuracy.json"
    runs = [{"seed": 0, "accuracy": 0.9, "macro_f1": 0.8}, {"seed": 1, "accuracy": 0.8, "macro_f1": 0.7}]
    transfer.write_text(json.dumps({"machine": {}, "runs": {"original": runs}}))  # benchmarks/train_accuracy.py's layout
    out = tmp_path / "out"
    result, _ = mfs.run(quick=True, data=mri_tree, out=out, transfer_results=transfer, log=lambda m: None)
    assert result["best_val_accuracy"] >= 0.75
    assert result["test"]["accuracy"] >= 0.75  # chance is 0.25
    assert result["transfer_learning"]["accuracy"] == pytest.approx(0.85)
    assert result["transfer_learning"]["macro_f1"] == pytest.approx(0.75)
    assert [row["accuracy"] is not None for row in result["comparison"]] == [True, True, True]
    assert "85.0%" in result["comparison_table"]
    assert (out / "report.md").is_file() and (out / "confusion_matrix.png").is_file()


def test_lesson_says_when_transfer_learning_is_not_measured(tmp_path, mri_tree, private_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no benchmarks/results/train_accuracy.json here
    result = run_lesson("mri-from-scratch", tmp_path / "out", quick=True, data=mri_tree, log=lambda m: None)
    assert result["transfer_learning"] is None
    assert "not measured yet" in result["comparison_table"]
    assert "not measured yet" in result["finding"]
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["test"]["accuracy"] == result["test"]["accuracy"]


def test_transfer_results_without_the_runs_level_are_read(tmp_path):
    path = tmp_path / "train_accuracy.json"
    path.write_text(json.dumps({"original": [{"accuracy": 0.5}]}))
    assert mfs.transfer_learning_result(path) == {"accuracy": 0.5, "macro_f1": None, "seeds": 1, "source": str(path)}


def test_unreadable_transfer_results_count_as_not_measured(tmp_path):
    bad = tmp_path / "train_accuracy.json"
    bad.write_text("{not json")
    assert mfs.transfer_learning_result(bad) is None
    bad.write_text(json.dumps({"runs": {"official": []}}))
    assert mfs.transfer_learning_result(bad) is None
    bad.write_text(json.dumps({"runs": {"original": []}}))
    assert mfs.transfer_learning_result(bad) is None


def test_augmentation_flips_and_shifts_keep_shape():
    x = np.arange(2 * 1 * 6 * 6, dtype=np.float32).reshape(2, 1, 6, 6)
    out = mfs.augment(x, 0, np.random.default_rng(1))
    for a, b in zip(out, x):
        assert np.array_equal(a, b) or np.array_equal(a, b[..., ::-1])
    assert mfs.augment(x, 2, np.random.default_rng(0)).shape == x.shape
