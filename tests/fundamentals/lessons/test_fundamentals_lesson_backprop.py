from braintumor.fundamentals.lessons import run_lesson


def test_hand_derived_and_graph_gradients_agree(tmp_path):
    result = run_lesson("backprop", tmp_path, quick=True, log=lambda m: None)
    assert max(result["relative_error"].values()) < 1e-12
    assert abs(result["loss_analytical"] - result["loss_graph"]) < 1e-12
    assert result["seconds_analytical"] > 0 and result["seconds_graph"] > 0
