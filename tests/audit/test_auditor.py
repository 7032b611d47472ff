import json

import numpy as np
import pytest

from braintumor.audit.auditor import audit, pick_examples
from braintumor.cli import main
from braintumor.errors import DataError

from planted import make_planted_tree


@pytest.fixture(scope="module")
def planted_tree(tmp_path_factory):
    return make_planted_tree(tmp_path_factory.mktemp("audit") / "data", per_class=4)


def test_audit_counts_the_planted_duplicates(planted_tree, tmp_path):
    root, planted = planted_tree
    result = audit(root, out=tmp_path, progress=False)
    levels = result["levels"]
    # byte-identical: the glioma copy and the relabelled pituitary image
    assert levels["byte"]["groups"] == 2 and levels["byte"]["files"] == 4
    assert levels["byte"]["per_split"] == {"Training": 1, "Training+Testing": 1}
    assert levels["byte"]["label_conflicts"] == 1
    # pixel-identical adds the recompressed meningioma PNG
    assert levels["pixel"]["groups"] == 3 and levels["pixel"]["redundant"] == 3
    assert levels["pixel"]["per_class"]["meningioma"] == {"groups": 1, "files": 2}
    # near adds the resized JPEG no_tumor copy, which crosses splits
    assert levels["near"]["groups"] == 4 and levels["near"]["files"] == 8
    assert levels["near"]["per_split"] == {"Training": 2, "Training+Testing": 2}
    assert result["near_groups_not_pixel_identical"] == 1
    conflict = [g for g in result["groups"] if g["label_conflict"]]
    assert len(conflict) == 1 and {f["path"] for f in conflict[0]["files"]} == set(planted["conflict"])
    assert conflict[0]["classes"] == ["no_tumor", "pituitary"]
    assert result["images"] == result["readable"] == 4 * 4 + 4 * 2 + 4
    for name in ("audit.md", "audit.json", "contact_sheet.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "audit.md").read_text()
    assert "Label conflicts: 1 groups" in report and "relabelled.png" in report and "contact_sheet.png" in report
    # every planted image is a 96-px PNG: their files do not give the class away
    shortcut = result["shortcut"]
    assert shortcut["images"] == result["readable"] and shortcut["accuracy"] < 0.6
    assert "Does the file alone give the class away?" in report and f"{shortcut['accuracy']:.1%}" in report
    assert json.loads((tmp_path / "audit.json").read_text())["levels"] == levels


def test_a_lower_threshold_finds_fewer_near_duplicates(planted_tree):
    root, _ = planted_tree
    strict = audit(root, threshold=0, progress=False)
    default = audit(root, progress=False)
    assert strict["levels"]["near"]["groups"] <= default["levels"]["near"]["groups"]
    assert strict["levels"]["pixel"] == default["levels"]["pixel"]


def test_unreadable_files_are_reported_and_skipped(planted_tree, tmp_path):
    import shutil

    root, _ = planted_tree
    copy = shutil.copytree(root, tmp_path / "data")
    (copy / "Training" / "glioma_tumor" / "broken.png").write_bytes(b"\x89PNG garbage")
    (copy / "Training" / "glioma_tumor" / "notes.txt").write_text("not an image")
    result = audit(copy, out=tmp_path / "report", progress=False)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in result["skipped"]}
    assert set(reasons) == {"broken.png", "notes.txt"}
    assert result["readable"] == result["images"] - 1
    assert "broken.png" in (tmp_path / "report" / "audit.md").read_text()


def test_pick_examples_prefers_conflicts_then_cross_split():
    groups = [
        {"id": 1, "label_conflict": False, "cross_split": False, "pixel_identical": True},
        {"id": 2, "label_conflict": False, "cross_split": True, "pixel_identical": True},
        {"id": 3, "label_conflict": True, "cross_split": False, "pixel_identical": True},
        {"id": 4, "label_conflict": False, "cross_split": False, "pixel_identical": False},
    ]
    assert [g["id"] for g in pick_examples(groups, rows=3)] == [3, 2, 4]


def test_cli_audit_json_and_errors(planted_tree, tmp_path, capsys):
    root, _ = planted_tree
    assert main(["audit", str(root), "--out", str(tmp_path / "a"), "--json", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["levels"]["near"]["groups"] == 4 and "groups" not in printed
    assert main(["audit", str(root), "--out", str(tmp_path / "b"), "-q"]) == 0
    text = capsys.readouterr().out
    assert "pixel-identical" in text and "report:" in text

    assert main(["audit", str(root), "--threshold", "99", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--threshold: must be an integer in 0..24" in err and "Traceback" not in err

    empty = tmp_path / "empty"
    (empty / "glioma").mkdir(parents=True)
    assert main(["audit", str(empty), "-q"]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_all_unreadable_is_a_clear_error(tmp_path):
    folder = tmp_path / "d" / "glioma"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 images"):
        audit(tmp_path / "d", progress=False)


def test_flat_dataset_counts_under_all(tmp_path):
    from planted import distinct_slice, save_png

    rng = np.random.default_rng(0)
    img = distinct_slice(rng, 64)
    save_png(img, tmp_path / "d" / "glioma" / "a.png")
    save_png(img, tmp_path / "d" / "glioma" / "b.png")
    save_png(distinct_slice(rng, 64), tmp_path / "d" / "no_tumor" / "c.png")
    result = audit(tmp_path / "d", progress=False)
    assert result["levels"]["pixel"]["per_split"] == {"all": 1}


def test_an_audit_without_duplicates_removes_an_earlier_contact_sheet(tmp_path):
    from planted import distinct_slice, save_png

    rng = np.random.default_rng(1)
    for folder in ("glioma", "no_tumor"):
        for i in range(3):
            save_png(distinct_slice(rng, 64), tmp_path / "d" / folder / f"{i}.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "contact_sheet.png").write_bytes(b"an earlier audit's sheet")
    result = audit(tmp_path / "d", out=tmp_path / "out", progress=False)
    assert result["levels"]["near"]["groups"] == 0
    assert not (tmp_path / "out" / "contact_sheet.png").exists()
    assert "contact_sheet.png" not in (tmp_path / "out" / "audit.md").read_text()


def test_against_finds_each_copy_of_the_audited_images_in_another_folder(planted_tree, tmp_path):
    import csv
    import shutil

    from PIL import Image

    from planted import save_png

    root = shutil.copytree(planted_tree[0], tmp_path / "data")
    # on top of the planted byte copy (glioma) and near copy (no_tumor) in Testing: a pixel-level
    # copy, and a byte copy of a pituitary image filed under meningioma (a label conflict)
    save_png(np.asarray(Image.open(root / "Training/glioma_tumor/img 1.png")), root / "Testing/glioma_tumor/resaved.png",
             compress_level=1)
    (root / "Testing/meningioma_tumor/misfiled.png").write_bytes((root / "Training/pituitary_tumor/img 1.png").read_bytes())
    out = tmp_path / "out"
    result = audit(root / "Training", out=out, progress=False, against=root / "Testing")
    a = result["against"]
    assert a["images"] == a["readable"] == 4 * 2 + 4
    assert a["with_a_copy"] == 4 and a["per_level"] == {"byte": 2, "pixel": 1, "near": 1}
    assert a["label_conflicts"] == 1
    assert a["per_class"]["glioma"] == {"images": 4, "with_a_copy": 2}
    got = {c["path"]: (c["level"], c["copy"], c["copy_class"]) for c in a["copies"]}
    assert got == {"glioma_tumor/copy.png": ("byte", "glioma_tumor/img 0.png", "glioma"),
                   "glioma_tumor/resaved.png": ("pixel", "glioma_tumor/img 1.png", "glioma"),
                   "no_tumor/near.jpg": ("near", "no_tumor/img 0.png", "no_tumor"),
                   "meningioma_tumor/misfiled.png": ("byte", "pituitary_tumor/img 1.png", "pituitary")}
    with (out / "against.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (out / "against_sheet.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "audit.md").read_text()
    assert "## Images of" in report and "4 of its 12 readable images" in report
    # the Testing folder's own images, distinct from Training's, are not copies
    assert not any(c["path"].endswith("img 0.png") for c in a["copies"])
    # audited again without --external: the earlier cross files go
    audit(root / "Training", out=out, progress=False)
    assert not (out / "against.csv").exists() and not (out / "against_sheet.png").exists()


def test_against_a_folder_that_overlaps_the_audited_one_is_refused(planted_tree, capsys):
    root, _ = planted_tree
    with pytest.raises(DataError, match="overlaps the audited folder"):
        audit(root, progress=False, against=root / "Testing")
    assert main(["audit", str(root / "Testing"), "--external", str(root), "-q"]) == 2
    err = capsys.readouterr().err
    assert "overlaps" in err and "--external" in err and "Traceback" not in err


def test_cli_audit_against_prints_the_copies(planted_tree, tmp_path, capsys):
    root, _ = planted_tree
    assert main(["audit", str(root / "Training"), "--external", str(root / "Testing"), "--out", str(tmp_path), "-q"]) == 0
    assert "2 of the 10 readable images" in capsys.readouterr().out
    assert main(["audit", str(root / "Training"), "--external", str(root / "Testing"), "--out", str(tmp_path), "-q",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["against"]
    assert printed["per_level"] == {"byte": 1, "pixel": 0, "near": 1} and "copies" not in printed
    assert len(json.loads((tmp_path / "audit.json").read_text())["against"]["copies"]) == 2


def test_an_audit_of_two_collections_counts_what_they_share(two_collections, tmp_path, capsys):
    from braintumor.cli import main

    first, second, copies = two_collections
    assert main(["audit", "-d", str(first), "-d", str(second), "-o", str(tmp_path / "audit"), "-q", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    near = result["collections"]["near"]
    assert near["per_collection"] == {"first": {"images": 32, "with_a_copy_elsewhere": len(copies)},
                                      "second": {"images": 32, "with_a_copy_elsewhere": len(copies)}}
    assert near["shared_groups"] == {"first+second": len(copies)} and near["label_conflicts"] == 0
    assert result["collections"]["byte"]["shared_groups"] == {}
    report = (tmp_path / "audit" / "audit.md").read_text()
    assert "## Across collections" in report and f"{len(copies)} of 32" in report
    written = json.loads((tmp_path / "audit" / "audit.json").read_text())
    groups = [g for g in written["groups"] if len(g["collections"]) == 2]
    assert len(groups) == len(copies) and {f["collection"] for f in groups[0]["files"]} == {"first", "second"}
