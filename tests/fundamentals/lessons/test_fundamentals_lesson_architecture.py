from braintumor.fundamentals.lessons import run_lesson


def test_sweep_picks_the_best_validation_score_and_beats_linear(tmp_path):
    result = run_lesson("architecture", tmp_path, quick=True, log=lambda m: None)
    table = result["table"]
    best_val = max(r["val_accuracy"] for r in table)
    linear = next(r for r in table if r["depth"] == 0)
    assert result["chosen"]["val_accuracy"] == best_val
    assert result["chosen"]["depth"] > 0
    assert best_val > linear["val_accuracy"] + 0.15
    assert result["chosen_test_accuracy"] > 0.85
