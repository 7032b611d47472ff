"""Initialization schemes have the variances they promise."""

import numpy as np
import pytest

from braintumor.fundamentals import init

rng = np.random.default_rng(0)
SHAPE = (400, 300)


def test_zero_and_constant():
    assert not init.zeros((3, 2)).any()
    np.testing.assert_array_equal(init.constant((2, 2), 0.7), np.full((2, 2), 0.7))


def test_uniform_stays_in_range_and_normal_has_sigma():
    u = init.uniform(SHAPE, 0.3, rng)
    assert -0.3 <= u.min() and u.max() <= 0.3
    assert u.var() == pytest.approx(0.3**2 / 3, rel=0.03)
    assert init.normal(SHAPE, 0.2, rng).std() == pytest.approx(0.2, rel=0.02)


@pytest.mark.parametrize("scheme, variance", [("xavier", 2 / 700), ("xavier_normal", 2 / 700), ("he", 2 / 400), ("he_uniform", 2 / 400)])
def test_xavier_and_he_variances(scheme, variance):
    w = init.initialize(scheme, SHAPE, 400, 300, rng)
    assert w.var() == pytest.approx(variance, rel=0.03)
    assert abs(w.mean()) < 0.01


def test_dtype_and_unknown_scheme():
    assert init.initialize("he", (3, 3), 3, 3, rng, np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="unknown initialization 'glorot'"):
        init.initialize("glorot", (3, 3), 3, 3, rng)
