import numpy as np

from braintumor.fundamentals.lessons import run_lesson, xor


def test_single_layer_cannot_fit_xor_but_two_layers_can(tmp_path):
    result = run_lesson("xor", tmp_path, quick=True, log=lambda m: None)
    assert max(result["perceptron_accuracies"]) <= 0.75
    assert result["best_linear_accuracy_on_grid"] == 0.75
    assert result["hand_built_mlp_accuracy"] == 1.0
    assert result["trained_mlp_accuracy"] == 1.0
    assert (tmp_path / "xor.png").stat().st_size > 0
    assert (tmp_path / "result.json").is_file()


def test_hand_built_network_is_xor_exactly():
    np.testing.assert_array_equal(xor.hand_built_xor(xor.X), [0, 1, 1, 0])
