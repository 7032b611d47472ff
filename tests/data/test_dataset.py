import numpy as np
import pytest
from PIL import Image

from braintumor.data.dataset import decode_all, load_images, scan
from braintumor.errors import DataError
from braintumor.data.preprocess import Preprocess

from synthetic import make_tree


def test_scan_split_layout(tiny_tree):
    ds = scan(tiny_tree)
    assert len(ds) == 48
    assert ds.counts()["Training"] == {"glioma": 6, "meningioma": 6, "no_tumor": 6, "pituitary": 6}
    assert set(ds.splits) == {"Training", "Testing"}
    assert all("(" in p.name and " " in p.name for p in ds.paths)


def test_scan_flat_layout_and_other_spellings(tmp_path):
    root = tmp_path / "flat"
    for name in ("glioma", "meningioma", "notumor", "pituitary"):
        (root / name).mkdir(parents=True)
        Image.new("L", (8, 8), 100).save(root / name / "x.png")
    ds = scan(root)
    assert len(ds) == 4 and set(ds.splits) == {""}
    assert sorted(ds.labels.tolist()) == [0, 1, 2, 3]


def test_unknown_class_folder(tiny_tree):
    (tiny_tree / "Training" / "astrocytoma").mkdir()
    with pytest.raises(DataError, match="astrocytoma"):
        scan(tiny_tree)


def test_class_map_option(tiny_tree):
    (tiny_tree / "Training" / "glioma_tumor").rename(tiny_tree / "Training" / "tumor_g")
    ds = scan(tiny_tree, {"tumor_g": "glioma"})
    assert ds.counts()["Training"]["glioma"] == 6


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "not found"),
    (lambda root: root.mkdir(), "no class folders"),
])
def test_missing_or_empty_root(tmp_path, setup, message):
    root = tmp_path / "nothing"
    setup(root)
    with pytest.raises(DataError, match=message):
        scan(root)


def test_empty_class_folder_is_an_error(tiny_tree):
    for f in (tiny_tree / "Testing" / "no_tumor").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no_tumor holds no images"):
        scan(tiny_tree)


def test_bad_files_are_reported_and_skipped(tiny_tree):
    d = tiny_tree / "Training" / "glioma_tumor"
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("hello")
    (d / "fake.png").write_bytes(b"not really a png")
    good = (d / "img (0).jpg").read_bytes()
    (d / "cut.jpg").write_bytes(good[: len(good) // 3])
    ds = scan(tiny_tree)
    assert [p for p, _ in ds.skipped] == [str(d / "notes.txt")]
    images, usable = load_images(ds, Preprocess(image_size=32))
    reasons = dict(usable.skipped)
    assert len(usable) == 48 and images.shape == (48, 32, 32, 3)
    assert "empty" in reasons[str(d / "empty.jpg")]
    assert "not an image" in reasons[str(d / "fake.png")]
    assert "truncated" in reasons[str(d / "cut.jpg")] or "decode" in reasons[str(d / "cut.jpg")]
    assert "extension" in reasons[str(d / "notes.txt")]


def test_decode_cache_is_reused(tiny_tree, monkeypatch):
    import braintumor.data.dataset as data

    ds = scan(tiny_tree)
    first, _ = load_images(ds, Preprocess(image_size=24), progress=False)
    monkeypatch.setattr(data, "decode_all", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    second, usable = load_images(ds, Preprocess(image_size=24), progress=False)
    assert np.array_equal(first, second) and len(usable) == len(ds)


def test_decode_all_reports_index_of_kept(tmp_path):
    ok = tmp_path / "ok.png"
    Image.new("RGB", (16, 16), (50, 60, 70)).save(ok)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"x")
    images, kept, skipped = decode_all([bad, ok], Preprocess(image_size=16, crop_foreground=False), progress=False)
    assert kept == [1] and images.shape == (1, 16, 16, 3) and skipped[0][0] == str(bad)


def test_fingerprint_changes_with_labels(tmp_path):
    a = scan(make_tree(tmp_path / "a", per_class=2))
    b = scan(make_tree(tmp_path / "b", per_class=2))
    assert a.fingerprint() == b.fingerprint()  # same relative paths, sizes and labels
    (tmp_path / "b" / "Training" / "glioma_tumor" / "img (0).jpg").rename(tmp_path / "b" / "Training" / "no_tumor" / "moved.jpg")
    assert scan(tmp_path / "b").fingerprint() != a.fingerprint()


def test_read_path_list_reads_a_csv_path_column_or_one_path_per_line(tmp_path):
    from braintumor.data.dataset import read_path_list

    csv_file = tmp_path / "issues.csv"
    csv_file.write_text('rank,path,label\n1,"Training/glioma_tumor/image (1).jpg",glioma\n2,Testing/x,a\n')
    assert read_path_list(csv_file) == ["Training/glioma_tumor/image (1).jpg", "Testing/x"]
    text = tmp_path / "list.txt"
    text.write_text("# wrong labels\nTraining/a b.jpg\n\n  Testing/c.jpg  \n")
    assert read_path_list(text) == ["Training/a b.jpg", "Testing/c.jpg"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="lists no images"):
        read_path_list(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="cannot read the list of images"):
        read_path_list(tmp_path / "missing.txt")


def test_read_relabel_list_reads_the_filled_in_corrections_only(tmp_path):
    from braintumor.data.dataset import read_relabel_list

    reviewed = tmp_path / "label_issues.csv"  # the shape label-issues writes, two rows reviewed
    reviewed.write_text("rank,path,source,label,suggested,p_label,p_suggested,corrected\n"
                        '1,"Training/glioma_tumor/image (1).jpg",Training,glioma,meningioma,0.01,0.98,meningioma_tumor\n'
                        "2,Testing/x.jpg,Testing,no_tumor,glioma,0.02,0.9,\n"
                        "3,Testing/y.jpg,Testing,pituitary,glioma,0.05,0.8, no_tumor \n")
    assert read_relabel_list(reviewed) == {"Training/glioma_tumor/image (1).jpg": "meningioma", "Testing/y.jpg": "no_tumor"}
    cases = [
        ("path,label\na.jpg,glioma\n", r"has no 'path' and 'corrected' columns \(its columns: path, label\)"),
        ("path,corrected\na.jpg,\nb.jpg,\n", "corrects no label"),
        ("path,corrected\na.jpg,glioma\nb.jpg,tumour\n", r"line 3: 'tumour' is not a class"),
        ("path,corrected\na.jpg,glioma\na.jpg,no_tumor\n", "a.jpg is corrected to both glioma and no_tumor"),
        ("path,corrected\n,glioma\n", "line 2: a corrected label without a path"),
        ("", "has no 'path' and 'corrected' columns"),
    ]
    for text, message in cases:
        reviewed.write_text(text)
        with pytest.raises(DataError, match=message):
            read_relabel_list(reviewed)
    with pytest.raises(DataError, match="cannot read the list of corrected labels"):
        read_relabel_list(tmp_path / "missing.csv")
