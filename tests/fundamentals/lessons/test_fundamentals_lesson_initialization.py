from braintumor.fundamentals.lessons import run_lesson


def test_zero_init_never_breaks_symmetry_and_xavier_beats_bad_scales(tmp_path):
    result = run_lesson("initialization", tmp_path, quick=True, log=lambda m: None)
    s = result["schemes"]
    zero, xavier = s["zero"], s["Xavier/Glorot"]
    small, large = s["normal σ=0.01 (too small)"], s["normal σ=3 (too large)"]
    assert zero["distinct_first_layer_units"] == 1
    assert xavier["distinct_first_layer_units"] == 16
    assert xavier["val_accuracy"] > zero["val_accuracy"] + 0.2
    assert xavier["final_train_loss"] < small["final_train_loss"]
    assert xavier["final_train_loss"] < large["final_train_loss"]
