import pytest

from braintumor.errors import BrainTumorError
from braintumor.train import TrainConfig, _lr_at


def test_schedule_warms_up_then_decays():
    peak, total, warm = 1e-3, 100, 10
    lrs = [_lr_at(s, total, warm, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))
    assert lrs[-1] == pytest.approx(0.01 * peak, rel=0.05)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("label_smoothing", 1.0)])
def test_config_validation_names_the_option(field, value):
    with pytest.raises(BrainTumorError, match=field):
        TrainConfig(**{field: value})
