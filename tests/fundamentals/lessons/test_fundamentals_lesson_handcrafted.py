import numpy as np

from braintumor.fundamentals.lessons import handcrafted, run_lesson


def test_hog_lbp_classifier_beats_chance_on_synthetic_slices(tmp_path, mri_tree, private_cache):
    result = run_lesson("handcrafted", tmp_path, quick=True, data=mri_tree, log=lambda m: None)
    assert result["test"]["n"] == result["split_sizes"]["test"] > 0
    assert result["test"]["accuracy"] >= 0.75  # chance is 0.25
    assert result["chosen_C"] in (0.01, 0.03)
    assert (tmp_path / "handcrafted.png").is_file()


def test_lbp_histograms_are_normalised_per_region():
    image = np.random.default_rng(0).random((32, 32))
    feats = handcrafted.lbp_features(image, grid=4)
    assert feats.shape == (160,)
    np.testing.assert_allclose(feats.reshape(16, 10).sum(axis=1), 1.0)
