from braintumor.fundamentals.lessons import run_lesson


def test_batch_is_smooth_stochastic_is_noisy_and_all_reach_the_target(tmp_path):
    result = run_lesson("gradient-descent", tmp_path, quick=True, log=lambda m: None)
    m = result["methods"]
    assert m["batch"]["share_of_steps_that_raised_the_loss"] == 0.0
    assert m["stochastic"]["share_of_steps_that_raised_the_loss"] > m["mini-batch"]["share_of_steps_that_raised_the_loss"]
    assert all(v["epochs_to_target"] is not None for v in m.values())
    # fewer passes over the data with more, smaller steps
    assert m["stochastic"]["epochs_to_target"] < m["mini-batch"]["epochs_to_target"] < m["batch"]["epochs_to_target"]
