"""Training on several collections: `train -d A -d B` under `dedup` and `cross`, with figures per
collection beside the pooled ones, and `compare` with its cross-collection row."""

import json

import pytest

from braintumor.cli import main
from braintumor.errors import BrainTumorError
from braintumor.evaluation.compare import compare, default_protocols
from braintumor.training import TrainConfig

TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "-q"]


def _train(capsys, *args) -> dict:
    assert main(["train", *args, *TINY, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cross_trains_on_the_other_collections_and_tests_on_the_held_out_ones_unseen_images(two_collections, tmp_path, capsys):
    first, second, copies = two_collections
    out = tmp_path / "cross"
    metrics = _train(capsys, "-d", str(first), "-d", str(second), "--protocol", "cross", "-o", str(out))
    cross = metrics["cross_collection"]
    assert cross == {"trained_on": ["first"], "tested_on": "second", "test_images": 24, "left_out_with_copy": len(copies),
                     "collection_images": 32}
    assert metrics["n"] == 24
    split = json.loads((out / "split.json").read_text())
    assert all("/second/" in p for p in split["test"]) and not any("/second/" in p for p in split["train"] + split["val"])
    assert not any(p.rsplit("/", 1)[-1].startswith("copy") for p in split["test"])
    report = (out / "report.md").read_text()
    assert "## Cross-collection test" in report and f"{len(copies)} of its 32 images have one and are left out" in report
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["data"] == [str(first), str(second)] and stored["test_collection"] == ""
    # evaluate re-creates the same split from the stored config
    assert main(["evaluate", "-m", str(out / "model.safetensors"), "-o", str(tmp_path / "again"), "-q", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["n"] == 24 and again["accuracy"] == pytest.approx(metrics["accuracy"])
    # the other way round, by name
    reverse = _train(capsys, "-d", str(first), "-d", str(second), "--protocol", "cross", "--test-collection", "first",
                     "-o", str(tmp_path / "reverse"))
    assert reverse["cross_collection"]["tested_on"] == "first" and reverse["cross_collection"]["trained_on"] == ["second"]


def test_pooled_dedup_reports_each_collection_beside_the_pooled_figure(two_collections, tmp_path, capsys):
    first, second, _ = two_collections
    metrics = _train(capsys, "-d", str(first), "-d", str(second), "--protocol", "dedup", "--test-fraction", "0.3",
                     "-o", str(tmp_path / "dedup"))
    by = metrics["by_collection"]
    assert set(by) == {"first", "second"} and sum(part["n"] for part in by.values()) == metrics["n"]
    assert sum(part["correct"] for part in by.values()) == metrics["correct"]
    assert "## By collection" in (tmp_path / "dedup" / "report.md").read_text()


def test_cross_with_one_collection_or_a_stray_test_collection_is_one_clear_error(two_collections, tmp_path, capsys):
    first, second, _ = two_collections
    assert main(["train", "-d", str(first), "--protocol", "cross", "-o", str(tmp_path / "a"), *TINY]) == 2
    assert "two or more data folders" in capsys.readouterr().err
    assert main(["train", "-d", str(first), "-d", str(second), "--test-collection", "second", "-o", str(tmp_path / "b"), *TINY]) == 2
    assert "applies to protocol 'cross' only" in capsys.readouterr().err
    assert main(["train", "-d", str(first), "-d", str(second), "--protocol", "cross", "--test-collection", "third",
                 "-o", str(tmp_path / "c"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no collection named 'third' among first, second" in err and "Traceback" not in err
    with pytest.raises(BrainTumorError, match="empty list"):
        TrainConfig(data=[])


def test_compare_adds_a_cross_collection_row_for_several_collections(two_collections, tmp_path):
    first, second, _ = two_collections
    assert default_protocols(str(first)) == ("original", "dedup", "official")
    assert default_protocols([str(first), str(second)])[-1] == "cross"
    config = TrainConfig(data=[str(first), str(second)], out=str(tmp_path / "cmp"), epochs=1, image_size=32, batch_size=8,
                         progress=False)
    result = compare(config, ("dedup", "cross"))
    rows = {r["protocol"]: r for r in result["rows"]}
    assert result["collections"] == ["first", "second"]
    assert set(rows["dedup"]["by_collection"]) == {"first", "second"}
    assert rows["cross"]["cross_collection"]["tested_on"] == "second" and rows["cross"]["leaked_test_images"] == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "second (trained on first; 8 images with a copy left out)" in table
