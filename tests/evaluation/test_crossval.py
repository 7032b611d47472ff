import json

import numpy as np
import pytest

from braintumor.cli import main
from braintumor.evaluation.crossval import scalar_metrics, summarise_folds


def test_scalar_metrics_flattens_headline_and_per_class_figures():
    m = {"accuracy": 0.9, "macro_f1": 0.8, "macro_roc_auc": None, "n": 10, "confusion_matrix": [[1]],
         "per_class": {"glioma": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "roc_auc": None, "support": 2}}}
    flat = scalar_metrics(m)
    assert flat["accuracy"] == 0.9 and np.isnan(flat["macro_roc_auc"]) and "n" not in flat
    assert flat["glioma/recall"] == 0.5 and np.isnan(flat["glioma/roc_auc"]) and "glioma/support" not in flat


def test_summary_is_mean_and_sample_std_over_folds():
    s = summarise_folds([{"accuracy": 0.9, "auc": np.nan}, {"accuracy": 0.8, "auc": 0.7}, {"accuracy": 1.0, "auc": 0.9}])
    assert s["accuracy"]["mean"] == pytest.approx(0.9) and s["accuracy"]["std"] == pytest.approx(0.1)
    assert s["auc"] == {"mean": pytest.approx(0.8), "std": pytest.approx(np.std([0.7, 0.9], ddof=1)), "folds": [None, 0.7, 0.9]}


def test_cli_folds_runs_every_fold_and_reports_mean_and_std(tiny_crossval):
    out, result = tiny_crossval
    fold_acc = [json.loads((out / f"fold{k}" / "test_metrics.json").read_text())["accuracy"] for k in (1, 2)]
    assert result["metrics"]["accuracy"]["folds"] == pytest.approx(fold_acc)
    assert result["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(fold_acc))
    assert result["metrics"]["accuracy"]["std"] == pytest.approx(np.std(fold_acc, ddof=1))
    tested = [set(json.loads((out / f"fold{k}" / "split.json").read_text())["test"]) for k in (1, 2)]
    assert not tested[0] & tested[1] and len(tested[0] | tested[1]) == 28
    for part in tested:  # the image and its copy are tested in the same fold
        for folder in ("glioma", "meningioma", "no_tumor", "pituitary"):
            names = {p.rsplit("/", 1)[-1] for p in part if f"/{folder}/" in p}
            assert ("0.png" in names) == ("copy.png" in names)
    report = (out / "crossval.md").read_text()
    assert "2 folds, dedup protocol" in report and "fold1/report.md" in report
    # the two test folds pooled: every image once, the folds' predictions unchanged
    fold_metrics = [json.loads((out / f"fold{k}" / "test_metrics.json").read_text()) for k in (1, 2)]
    pooled = result["pooled"]
    assert pooled["n"] == 28 and pooled["correct"] == sum(m["correct"] for m in fold_metrics)
    assert np.array_equal(pooled["confusion_matrix"], np.add(*[m["confusion_matrix"] for m in fold_metrics]))
    # (ECE is never negative, so resampling adds to it: on 28 nearly uniform predictions the
    # percentile interval may lie above the point estimate. It is a real interval all the same.)
    assert 0 <= pooled["ece_ci"][0] <= pooled["ece_ci"][1] <= 1
    assert "2 test folds pooled (28 images" in report
    for png in ("pooled_confusion_matrix.png", "pooled_reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_resume_of_a_crossval_folder_reads_its_settings_and_skips_finished_folds(tiny_crossval, tmp_path, capsys):
    import shutil

    source, _ = tiny_crossval
    out = tmp_path / "cv"
    shutil.copytree(source, out)
    splits = [(out / f"fold{k}" / "split.json").read_text() for k in (1, 2)]
    # only --out, --resume and more epochs: folds, protocol, size and data come from the folds
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--json", "-q"]) == 0
    for k, split in zip((1, 2), splits):
        history = [json.loads(line)["epoch"] for line in (out / f"fold{k}" / "metrics.jsonl").read_text().splitlines()]
        assert history == [1, 2] and (out / f"fold{k}" / "split.json").read_text() == split
    first = json.loads(capsys.readouterr().out)
    assert first["folds"] == 2 and first["protocol"] == "dedup"
    # resumed again, every fold has finished: nothing is trained, the same figures come back
    stamps = [(out / f"fold{k}" / "last_state.pt").stat().st_mtime_ns for k in (1, 2)]
    assert main(["train", "--out", str(out), "--resume", "--json", "-q"]) == 0
    assert [(out / f"fold{k}" / "last_state.pt").stat().st_mtime_ns for k in (1, 2)] == stamps
    assert json.loads(capsys.readouterr().out)["pooled"]["correct"] == first["pooled"]["correct"]
    # a fold is one run: resumed with --folds it would grow a cross-validation inside itself
    assert main(["train", "--out", str(out / "fold1"), "--resume", "--folds", "2", "-q"]) == 2
    assert "holds one training run, not a cross-validation" in capsys.readouterr().err
    assert not (out / "fold1" / "fold1").exists()


def test_cli_too_many_folds_fails_before_training(distinct_tree, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["train", "--data", str(distinct_tree), "--out", str(out), "--protocol", "dedup", "--folds", "7", "-q"]) == 2
    err = capsys.readouterr().err
    assert "folds=7 is more than the 6 groups of images of class glioma" in err and "--folds 6" in err
    assert not out.exists()
