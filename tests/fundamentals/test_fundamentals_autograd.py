"""The computation graph: chain rule, accumulation, broadcasting, and each elementary op vs PyTorch."""

import numpy as np
import pytest

from braintumor.fundamentals import autograd as ag
from braintumor.fundamentals.autograd import Tensor, no_grad, unbroadcast

rng = np.random.default_rng(0)


def test_chain_rule_on_a_small_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 5.0])


def test_node_used_twice_accumulates_both_contributions():
    a = Tensor(3.0, requires_grad=True)
    b = a * 2.0  # b feeds the output along two paths
    (b * b + b).backward()  # d/da (4a² + 2a) = 8a + 2
    assert a.grad == pytest.approx(26.0)


def test_diamond_graph_and_gradients_accumulate_across_calls():
    x = Tensor(2.0, requires_grad=True)
    y = ag.exp(x) * ag.log(x)  # two branches from x, joined again
    y.backward()
    expected = np.exp(2.0) * np.log(2.0) + np.exp(2.0) / 2.0
    assert x.grad == pytest.approx(expected)
    ag.exp(x).backward()
    assert x.grad == pytest.approx(expected + np.exp(2.0))
    x.zero_grad()
    assert x.grad is None


def test_deep_chain_needs_no_recursion():
    x = Tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**5000)


def test_constants_get_no_gradient_and_no_grad_records_nothing():
    w = Tensor(np.ones(3), requires_grad=True)
    c = Tensor(np.arange(3.0))
    (w * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(w.grad, [0.0, 1.0, 2.0])
    with no_grad():
        z = w * c
    assert not z.requires_grad and z.parents == ()


def test_retain_grad_keeps_an_interior_gradient():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = (x * 3.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 18 * x.data)


def test_backward_of_a_non_scalar_needs_a_gradient():
    with pytest.raises(ValueError, match="explicit grad"):
        (Tensor(np.ones(3), requires_grad=True) * 2.0).backward()


def test_float32_stays_float32():
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = (x * 2.0 + 1.0) @ x
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("shape, target", [((4, 3), (3,)), ((4, 3), (1, 3)), ((4, 3), (4, 1)), ((2, 4, 3), ()), ((5,), (5,))])
def test_unbroadcast_sums_over_broadcast_axes(shape, target):
    g = rng.standard_normal(shape)
    out = unbroadcast(g, target)
    assert out.shape == target
    assert out.sum() == pytest.approx(g.sum())


A, B = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
ELEMENTARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [A, B]),
    "add broadcast row": (lambda a, b: a + b, lambda a, b: a + b, [A, B[0]]),
    "add broadcast column": (lambda a, b: ag.add(a, b), lambda a, b: a + b, [A, B[:, :1]]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [A, B[:1]]),
    "neg": (lambda a: -a, lambda a: -a, [A]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [A, B]),
    "mul broadcast": (lambda a, b: a * b, lambda a, b: a * b, [A, B[0]]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [A, B + 3.0 * np.sign(B)]),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, [A, B.T]),
    "sum all": (lambda a: a.sum(), lambda a: a.sum(), [A]),
    "sum axis 0": (lambda a: a.sum(axis=0), lambda a: a.sum(dim=0), [A]),
    "sum axis 1 keepdims": (lambda a: a.sum(axis=1, keepdims=True), lambda a: a.sum(dim=1, keepdim=True), [A]),
    "mean all": (lambda a: a.mean(), lambda a: a.mean(), [A]),
    "mean axis 1": (lambda a: a.mean(axis=1), lambda a: a.mean(dim=1), [A]),
    "reshape": (lambda a: a.reshape(2, 6), lambda a: a.reshape(2, 6), [A]),
    "exp": (ag.exp, lambda a: a.exp(), [A]),
    "log": (ag.log, lambda a: a.log(), [np.abs(A) + 0.5]),
    "abs": (ag.absolute, lambda a: a.abs(), [A]),
}


@pytest.mark.parametrize("name", list(ELEMENTARY))
def test_elementary_op_matches_torch_and_finite_differences(name, check_op):
    ours, theirs, inputs = ELEMENTARY[name]
    check_op(ours, theirs, inputs)


def test_matmul_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        ag.matmul(Tensor(np.ones(3)), Tensor(np.ones((3, 2))))
