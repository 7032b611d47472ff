import json

import numpy as np
import pytest

from braintumor.evaluation.compare import compare, leaked_test_images
from braintumor.errors import DataError
from braintumor.training.trainer import TrainConfig

from planted import distinct_slice, save_png


def test_leaked_test_images_counts_test_images_whose_group_was_trained_on(tmp_path):
    split = {"train": ["a", "b"], "val": ["c"], "test": ["a2", "c2", "d", "x"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    group_of = {"a": 0, "a2": 0, "b": 1, "c": 2, "c2": 2, "d": 3}
    assert leaked_test_images(tmp_path / "split.json", group_of) == 2


@pytest.fixture(scope="module")
def leaky_tree(tmp_path_factory):
    """Training: 4 classes x 8 distinct images; Testing: 2 new images per class plus byte copies
    of 2 Training images per class (8 test images that leak under `official`)."""
    root = tmp_path_factory.mktemp("cmp") / "data"
    rng = np.random.default_rng(9)
    for folder in ("glioma", "meningioma", "no_tumor", "pituitary"):
        for i in range(8):  # 8 per class: the stratified validation carve needs one image per class
            save_png(distinct_slice(rng, 64), root / "Training" / folder / f"{i}.png")
        for i in range(2):
            save_png(distinct_slice(rng, 64), root / "Testing" / folder / f"new{i}.png")
            (root / "Testing" / folder / f"copy{i}.png").write_bytes((root / "Training" / folder / f"{i}.png").read_bytes())
    return root


def test_compare_trains_each_protocol_and_counts_leaks(leaky_tree, tmp_path):
    config = TrainConfig(data=str(leaky_tree), out=str(tmp_path / "cmp"), epochs=1, image_size=32, batch_size=16,
                         test_fraction=0.25, progress=False)
    result = compare(config)
    rows = {r["protocol"]: r for r in result["rows"]}
    assert list(rows) == ["original", "dedup", "official"]
    assert rows["dedup"]["leaked_test_images"] == 0
    assert rows["official"]["leaked_test_images"] == 8 and rows["official"]["n"] == 16
    assert 0 <= rows["original"]["leaked_test_images"] <= rows["original"]["n"]
    for r in rows.values():
        lo, hi = r["accuracy_ci"]
        assert lo <= r["accuracy"] <= hi
    report = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| [dedup](dedup/report.md) |" in report and "8 of 16" in report
    official = rows["official"]["testing_folder"]
    assert official == {"n": 16, "correct": round(rows["official"]["accuracy"] * 16), "accuracy": rows["official"]["accuracy"]}
    split = json.loads((tmp_path / "cmp" / "original" / "split.json").read_text())
    tested_from_testing = sum("/Testing/" in f"/{p}" for p in split["test"])
    part = rows["original"]["testing_folder"]
    assert (part is None) == (tested_from_testing in (0, rows["original"]["n"]))
    if part is not None:
        assert part["n"] == tested_from_testing and f"({part['correct']}/{part['n']})" in report
    # temperature scaling was fitted on validation, stored in the checkpoint and used in evaluation
    info = json.loads((tmp_path / "cmp" / "dedup" / "model.json").read_text())
    metrics = json.loads((tmp_path / "cmp" / "dedup" / "test_metrics.json").read_text())
    assert info["temperature"] != 1.0 and metrics["temperature"] == info["temperature"]
    assert "Temperature scaling" in (tmp_path / "cmp" / "dedup" / "report.md").read_text()
    assert (tmp_path / "cmp" / "dedup" / "reliability.png").is_file()


def test_compare_skips_official_without_split_folders_and_rejects_unknown(tmp_path):
    rng = np.random.default_rng(2)
    for folder in ("glioma", "meningioma", "no_tumor", "pituitary"):
        for i in range(5):
            save_png(distinct_slice(rng, 48), tmp_path / "flat" / folder / f"{i}.png")
    config = TrainConfig(data=str(tmp_path / "flat"), out=str(tmp_path / "cmp"), epochs=1, image_size=32, progress=False)
    with pytest.raises(DataError, match="unknown protocols"):
        compare(config, ("original", "random"))
    result = compare(config, ("official",))
    assert result["rows"] == [{"protocol": "official", "skipped": "the data has no Training/ and Testing/ folders"}]


def test_cli_compare_takes_the_training_options_and_resumes_its_runs(leaky_tree, tmp_path, capsys):
    from braintumor.cli import main

    listing = tmp_path / "drop.txt"
    listing.write_text("Training/glioma/7.png\n")
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), "--protocols", "dedup", "official", "--json", "-q"]
    assert main([*args, "--data", str(leaky_tree), "--epochs", "1", "--image-size", "32", "--batch-size", "16",
                 "--lr", "1e-3", "--exclude", str(listing)]) == 0
    first = {r["protocol"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for protocol in ("dedup", "official"):
        split = json.loads((out / protocol / "split.json").read_text())
        assert split["excluded"] == ["Training/glioma/7.png"]
        assert not any(p.endswith("Training/glioma/7.png") for p in split["train"] + split["val"])
        config = json.loads((out / protocol / "model.json").read_text())["train_config"]
        assert (config["lr"], config["image_size"], config["protocol"]) == (1e-3, 32, protocol)
    # resumed with only --out: the finished runs keep their settings and are not trained again
    stamps = {p: (out / p / "last_state.pt").stat().st_mtime_ns for p in first}
    assert main([*args, "--resume"]) == 0
    again = {r["protocol"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert {p: (out / p / "last_state.pt").stat().st_mtime_ns for p in first} == stamps
    assert {p: r["accuracy"] for p, r in again.items()} == {p: r["accuracy"] for p, r in first.items()}
