from braintumor.fundamentals.lessons import run_lesson


def test_sigmoid_vanishes_relu_he_holds_large_sigma_explodes(tmp_path):
    result = run_lesson("vanishing-gradients", tmp_path, quick=True, log=lambda m: None)
    signal = result["signal_first_over_last"]
    assert signal["sigmoid, Xavier"] < 1e-3
    assert 0.2 < signal["ReLU, He"] < 5
    assert signal["ReLU, 2 x He σ"] > 50
    assert result["weight_gradient_first_over_last"]["sigmoid, Xavier"] < 1e-3
