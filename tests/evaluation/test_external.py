"""External validation: a whole labelled folder scored, and checked for copies of the training images."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.model.checkpoint import read_metadata as read_info
from braintumor.data.classes import CLASSES
from braintumor.cli import main
from braintumor.data.dataset import scan
from braintumor.data.duplicates import hash_dataset
from braintumor.evaluation.external import _merge, training_copies
from braintumor.data.protocols import load_run
from planted import distinct_slice, jpeg_roundtrip, save_png


def _external_tree(checkpoint: Path, root: Path) -> tuple[Path, dict]:
    """A labelled folder holding three copies of one of the checkpoint's training images (the
    same bytes, the same pixels in other bytes, a JPEG re-encoding), a copy of one of its test
    images, and one new image per class. Returns the folder and the expected level per file."""
    info = read_info(checkpoint)
    _, dataset, split = load_run(checkpoint, info)
    trained = dataset.paths[split.train[0]]
    held_out = dataset.paths[split.test[0]]
    c_train = CLASSES[dataset.labels[split.train[0]]]
    c_test = CLASSES[dataset.labels[split.test[0]]]
    pixels = np.asarray(Image.open(trained).convert("RGB"))
    expected = {}
    (root / c_train).mkdir(parents=True)
    (root / c_train / "same_bytes.png").write_bytes(trained.read_bytes())
    expected[f"{c_train}/same_bytes.png"] = "byte"
    save_png(pixels, root / c_train / "same_pixels.png", compress_level=1)
    assert (root / c_train / "same_pixels.png").read_bytes() != trained.read_bytes()
    expected[f"{c_train}/same_pixels.png"] = "pixel"
    Image.fromarray(jpeg_roundtrip(pixels, 90)).save(root / c_train / "reencoded.jpg", quality=90)
    expected[f"{c_train}/reencoded.jpg"] = "near"
    (root / c_test).mkdir(parents=True, exist_ok=True)
    (root / c_test / "held_out.png").write_bytes(held_out.read_bytes())
    expected[f"{c_test}/held_out.png"] = ""
    rng = np.random.default_rng(99)
    for c in CLASSES:
        save_png(distinct_slice(rng, 64), root / c / "new.png")
        expected[f"{c}/new.png"] = ""
    return root, expected


@pytest.fixture(scope="module")
def external(tiny_crossval, tmp_path_factory):
    cv, _ = tiny_crossval
    checkpoint = cv / "fold1" / "model.safetensors"
    root, expected = _external_tree(checkpoint, tmp_path_factory.mktemp("external") / "data")
    return checkpoint, root, expected


def _run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_each_copy_of_a_training_image_is_found_at_its_level_and_held_out_images_are_not(external):
    checkpoint, root, expected = external
    dataset = scan(root)
    found = training_copies(checkpoint, read_info(checkpoint), hash_dataset(dataset, progress=False), progress=False)
    got = {p.relative_to(root).as_posix(): level for p, level in zip(dataset.paths, found["level"])}
    assert got == expected
    info = read_info(checkpoint)
    _, train_set, split = load_run(checkpoint, info)
    assert found["seen"] == len(split.train) + len(split.val)
    for p, level, match, label in zip(dataset.paths, found["level"], found["match"], found["match_label"]):
        if level:  # the copy named is a training image of the image's class
            assert train_set.labels[train_set.paths.index(Path(match))] == label == CLASSES.index(p.parent.name)
        else:
            assert match is None and label == -1
    # all three copies name the one training image they were made from, the re-encoding too
    copied = {level: (m, b) for level, m, b in zip(found["level"], found["match"], found["bits"]) if level}
    assert len({m for m, _ in copied.values()}) == 1
    assert copied["byte"][1] == copied["pixel"][1] == 0 and 0 <= copied["near"][1] <= 8


def test_external_evaluation_reports_all_images_and_the_unseen_ones(external, tmp_path):
    checkpoint, root, expected = external
    code, printed, _ = _run("evaluate", checkpoint, "--external", root, "--out", tmp_path / "ext", "--json", "-q")
    assert code == 0
    metrics = json.loads(printed)
    assert metrics["n"] == len(expected)
    copies = metrics["training_copies"]
    assert copies["with_a_copy"] == 3 and copies["per_level"] == {"byte": 1, "pixel": 1, "near": 1}
    assert copies["label_conflicts"] == 0
    assert metrics["unseen"]["n"] == len(expected) - 3
    with (tmp_path / "ext" / "training_copies.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == ["reencoded.jpg", "same_bytes.png", "same_pixels.png"]
    # The unseen figure is the accuracy of exactly the images without a copy.
    from braintumor.inference.predictor import Predictor

    unseen = [root / name for name, level in expected.items() if not level]
    predicted = Predictor([checkpoint], runtime="torch").predict(unseen)
    right = sum(p.probabilities and max(p.probabilities, key=p.probabilities.get) == Path(p.path).parent.name
                for p in predicted)
    assert metrics["unseen"]["correct"] == right
    report = (tmp_path / "ext" / "report.md").read_text()
    assert "## Copies of the model's training images" in report and "training_copies.csv" in report
    assert "external data" in report.splitlines()[0]


def test_no_copy_check_scores_the_folder_alone(external, tmp_path):
    checkpoint, root, expected = external
    code, printed, _ = _run("evaluate", checkpoint, "--external", root, "--out", tmp_path / "ext", "--no-copy-check",
                            "--json", "-q")
    assert code == 0
    metrics = json.loads(printed)
    assert metrics["n"] == len(expected) and "training_copies" not in metrics
    assert not (tmp_path / "ext" / "training_copies.csv").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "--external needs --out"),
    (["--out", "x", "--seed", "1"], "--seed cannot be combined with --external"),
    (["--out", "x", "--protocol", "dedup"], "--protocol cannot be combined with --external"),
    (["--out", "x", "--train-data", "/nonexistent/data"], "--no-copy-check"),
    (["--out", "RUN"], "holds a training run"),
])
def test_bad_external_arguments_are_one_clear_error(external, tmp_path, extra, message):
    checkpoint, root, _ = external
    extra = [str(tmp_path / e) if e == "x" else str(checkpoint.parent) if e == "RUN" else e for e in extra]
    code, _, err = _run("evaluate", checkpoint, "--external", root, *extra, "-q")
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("option", [["--no-copy-check"], ["--class-map", "a=glioma"]])
def test_copy_options_without_external_are_refused(external, option):
    checkpoint, _, _ = external
    code, _, err = _run("evaluate", checkpoint, *option, "-q")
    assert code == 2 and "--external" in err


def test_a_folder_of_other_class_names_is_scored_with_class_map(external, tmp_path):
    checkpoint, _, _ = external
    rng = np.random.default_rng(5)
    for i in range(4):
        save_png(distinct_slice(rng, 64), tmp_path / "data" / "Tumor P" / f"{i}.png")
    code, _, err = _run("evaluate", checkpoint, "--external", tmp_path / "data", "--out", tmp_path / "ext", "-q",
                        "--no-copy-check")
    assert code == 2 and "unknown class folder 'Tumor P'" in err and "--class-map" in err
    code, printed, _ = _run("evaluate", checkpoint, "--external", tmp_path / "data", "--out", tmp_path / "ext", "-q",
                            "--no-copy-check", "--class-map", "Tumor P=pituitary", "--json")
    assert code == 0
    metrics = json.loads(printed)
    assert metrics["n"] == 4 and metrics["per_class"]["pituitary"]["support"] == 4
    # macro-F1 over pituitary and whatever it was taken for, not over four classes
    pred = np.array(metrics["confusion_matrix"])[CLASSES.index("pituitary")]
    occurring = {"pituitary"} | {c for c, n in zip(CLASSES, pred) if n}
    assert metrics["macro_f1"] == pytest.approx(np.mean([metrics["per_class"][c]["f1"] for c in occurring]))


def test_merging_members_keeps_the_strongest_copy_of_each_image():
    a = {"level": np.array(["", "near", "byte", "near"]), "match": [None, "t/a.png", "t/b.png", "t/e.png"],
         "match_label": np.array([-1, 1, 2, 3]), "bits": np.array([-1, 3, 0, 6]), "seen": 10, "seen_paths": [f"t/{i}.png" for i in range(10)], "train_data": "d1"}
    b = {"level": np.array(["pixel", "", "near", "near"]), "match": ["u/c.png", None, "u/d.png", "u/f.png"],
         "match_label": np.array([0, -1, 2, 3]), "bits": np.array([0, -1, 2, 1]), "seen": 12, "seen_paths": [f"u/{i}.png" for i in range(12)], "train_data": "d2"}
    merged = _merge([a, b])
    assert list(merged["level"]) == ["pixel", "near", "byte", "near"]
    assert merged["match"] == ["u/c.png", "t/a.png", "t/b.png", "u/f.png"]  # of two near copies, the nearer
    assert list(merged["match_label"]) == [0, 1, 2, 3] and list(merged["bits"]) == [0, 3, 0, 1]
    assert merged["seen"] == 22 and merged["train_data"] == "d1, d2"
    assert _merge([a, a])["seen"] == 10  # two members of one training set compare with its images once


def test_default_names_the_shipped_model(monkeypatch):
    from braintumor.evaluation import external
    from braintumor.inference.predictor import DEFAULT_MODEL

    seen = {}

    def fake(model, *args, **kwargs):  # stands in for the scoring, which needs the model's training data
        seen["model"] = model
        raise external.DataError("stop here")

    monkeypatch.setattr(external, "evaluate_external", fake)
    code, _, err = _run("evaluate", "default", "--external", "somewhere", "--out", "x", "-q")
    assert code == 2 and "stop here" in err
    assert Path(seen["model"]) == DEFAULT_MODEL
