"""The finite-difference checker passes correct rules and catches wrong ones."""

import numpy as np

from braintumor.fundamentals.autograd import Tensor, as_tensor, make
from braintumor.fundamentals.gradcheck import gradcheck, numerical_gradients, relative_error


def test_passes_a_correct_rule():
    ok, errors = gradcheck(lambda a, b: (a * b).sum(axis=0), [np.ones((3, 2)) * 0.3, np.arange(6.0).reshape(3, 2)])
    assert ok and max(errors) < 1e-8


def test_catches_a_wrong_rule():
    def wrong_square(x):
        x = as_tensor(x)
        return make(x.data**2, (x,), lambda g: (g * x.data,), "square")  # forgot the factor 2

    ok, errors = gradcheck(wrong_square, [np.array([1.0, 2.0, -3.0])])
    assert not ok and errors[0] > 0.1


def test_numerical_gradient_of_a_known_function():
    (grad,) = numerical_gradients(lambda x: (x * x * x).sum(), [np.array([1.0, -2.0])])
    np.testing.assert_allclose(grad, [3.0, 12.0], rtol=1e-8)


def test_relative_error():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([1.0, 0.0]), np.array([1.0, 1e-3])) == np.float64(1e-3) / np.linalg.norm([1.0, 1e-3])
    assert isinstance(Tensor(1.0).item(), float)
