import pytest

from braintumor.data.classes import CLASSES, canonical_class, parse_class_map
from braintumor.errors import DataError


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("glioma_tumor", "glioma"),
        ("glioma", "glioma"),
        ("Glioma Tumor", "glioma"),
        ("meningioma_tumor", "meningioma"),
        ("notumor", "no_tumor"),
        ("no_tumor", "no_tumor"),
        ("No-Tumor", "no_tumor"),
        ("pituitary_tumor", "pituitary"),
        ("pituitary", "pituitary"),
    ],
)
def test_common_spellings_map_to_canonical_names(folder, expected):
    assert canonical_class(folder) == expected


def test_unknown_folder_names_folder_and_accepted_names():
    with pytest.raises(DataError) as info:
        canonical_class("astrocytoma")
    text = str(info.value)
    assert "astrocytoma" in text
    assert all(c in text for c in CLASSES)
    assert "--class-map" in text


def test_class_map_overrides_and_validates():
    mapping = parse_class_map("tumor_g=glioma, healthy brain=no_tumor")
    assert canonical_class("tumor_g", mapping) == "glioma"
    assert canonical_class("healthy brain", mapping) == "no_tumor"
    with pytest.raises(DataError, match="unknown class 'cancer'"):
        parse_class_map("x=cancer")
    with pytest.raises(DataError, match="FOLDER=CLASS"):
        parse_class_map("justaname")
