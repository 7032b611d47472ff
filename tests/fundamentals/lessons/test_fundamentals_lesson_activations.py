import pytest

from braintumor.fundamentals.lessons import run_lesson


def test_derivatives_match_closed_forms_and_sigmoid_peaks_at_a_quarter(tmp_path):
    result = run_lesson("activations", tmp_path, quick=True, log=lambda m: None)
    assert max(result["autograd_vs_closed_form_max_error"].values()) < 1e-12
    assert result["max_derivative"]["sigmoid"] == pytest.approx(0.25)
    assert result["max_derivative"]["tanh"] == pytest.approx(1.0)
    assert result["max_derivative"]["relu"] == 1.0
    assert result["gelu_minimum"]["value"] == pytest.approx(-0.17, abs=0.005)
    assert result["softmax_rows_sum_to_one"]
    assert (tmp_path / "activations.png").is_file()
