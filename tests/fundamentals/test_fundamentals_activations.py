"""Activations and softmax against PyTorch (values and gradients) and finite differences."""

import numpy as np
import pytest

from braintumor.fundamentals import activations as act
from braintumor.fundamentals.autograd import Tensor

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 5)) * 2.0
X_AWAY_FROM_ZERO = X + 0.2 * np.sign(X)  # ReLU has no derivative at 0


@pytest.mark.parametrize("name, inputs", [("sigmoid", X), ("tanh", X), ("relu", X_AWAY_FROM_ZERO), ("gelu", X)])
def test_activation_matches_torch(name, inputs, check_op):
    import torch

    reference = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
                 "gelu": lambda t: torch.nn.functional.gelu(t, approximate="none")}[name]
    check_op(act.ACTIVATIONS[name], reference, [inputs])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax_match_torch(axis, check_op):
    import torch

    check_op(lambda t: act.softmax(t, axis), lambda t: torch.softmax(t, dim=axis), [X])
    check_op(lambda t: act.log_softmax(t, axis), lambda t: torch.log_softmax(t, dim=axis), [X])


def test_softmax_is_stable_for_huge_logits():
    logits = Tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]]))
    probs = act.softmax(logits, axis=1).data
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(act.log_softmax(logits, axis=1).data[0], [0.0, -1000.0, -2000.0])


def test_sigmoid_does_not_overflow():
    x = Tensor(np.array([-800.0, 0.0, 800.0]), requires_grad=True)
    with np.errstate(over="raise"):
        y = act.sigmoid(x)
    np.testing.assert_allclose(y.data, [0.0, 0.5, 1.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.25, 0.0])


def test_float32_activations_stay_float32():
    x = Tensor(X.astype(np.float32))
    for f in act.ACTIVATIONS.values():
        assert f(x).dtype == np.float32
