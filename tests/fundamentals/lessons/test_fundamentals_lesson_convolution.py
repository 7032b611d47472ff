import numpy as np
import pytest

from braintumor.errors import DataError
from braintumor.fundamentals.lessons import convolution, run_lesson


def test_reproduces_the_original_study_example(tmp_path, mri_tree):
    result = run_lesson("convolution", tmp_path, quick=True, data=mri_tree, log=lambda m: None)
    assert result["result"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert result["matches_original_study"] and result["matches_naive_loops"]
    assert result["output_shapes"]["stride 2, padding 1"] == [3, 3]
    assert str(mri_tree) in result["mri_source"]


def test_sobel_kernels_see_the_edge_they_are_built_for():
    image = np.zeros((20, 20))
    image[:, 10:] = 1.0  # one vertical edge
    sx = convolution.filter2d(image, convolution.EDGE_KERNELS["Sobel x (vertical edges)"])
    sy = convolution.filter2d(image, convolution.EDGE_KERNELS["Sobel y (horizontal edges)"])
    assert np.abs(sx).max() == 4.0 and np.abs(sy).max() == 0.0


def test_an_explicit_missing_data_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        run_lesson("convolution", tmp_path / "out", quick=True, data=tmp_path / "nowhere", log=lambda m: None)


def test_without_any_data_folder_the_phantom_stands_in(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAINTUMOR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # ../shared/data/sartaj does not exist from here
    result = run_lesson("convolution", tmp_path / "out", quick=True, log=lambda m: None)
    assert "phantom" in result["mri_source"]
    assert result["matches_original_study"]
