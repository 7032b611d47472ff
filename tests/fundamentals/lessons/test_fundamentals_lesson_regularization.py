from braintumor.fundamentals.lessons import run_lesson


def test_overfitting_then_dropout_and_early_stopping_help(tmp_path):
    result = run_lesson("regularization", tmp_path, quick=True, log=lambda m: None)
    plain, dropout, early = result["no_regularization"], result["dropout"], result["early_stopping"]
    # overfitting: the training loss keeps falling while validation loss rises well above its minimum
    assert plain["final_train_loss"] < 0.5 * plain["best_val_loss"]
    assert plain["final_val_loss"] > 1.5 * plain["best_val_loss"]
    assert dropout["final_val_loss"] < plain["final_val_loss"]
    assert early["stopped_after"] < 120
    assert early["restored_epoch"] == plain["best_epoch"]
    assert early["val_loss"] == plain["best_val_loss"]
