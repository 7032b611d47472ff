"""Optimizers against torch.optim, batching, early stopping."""

import numpy as np
import pytest

from braintumor.fundamentals.autograd import Tensor
from braintumor.fundamentals.optim import SGD, Adam, EarlyStopping, batches


def _run_ours_and_torch(make_ours, make_theirs, steps=5):
    """Apply the same sequence of gradients to a weight vector with both optimizers."""
    import torch

    rng = np.random.default_rng(0)
    start = rng.standard_normal(6)
    grads = rng.standard_normal((steps, 6))
    w = Tensor(start.copy(), requires_grad=True)
    ours = make_ours([w])
    ref = torch.tensor(start.copy(), requires_grad=True)
    theirs = make_theirs([ref])
    for g in grads:
        w.grad = g.copy()
        ours.step()
        ref.grad = torch.tensor(g.copy())
        theirs.step()
    return w.data, ref.detach().numpy()


def test_sgd_with_momentum_matches_torch():
    import torch

    ours, theirs = _run_ours_and_torch(lambda p: SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_plain_sgd_step():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w.grad = np.array([0.5, -1.0])
    SGD([w], lr=0.1).step()
    np.testing.assert_allclose(w.data, [0.95, 2.1])


def test_adam_matches_torch():
    import torch

    ours, theirs = _run_ours_and_torch(lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01), steps=20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_optimizer_rejects_bad_settings():
    with pytest.raises(ValueError, match="no parameters"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="positive"):
        Adam([Tensor(1.0, requires_grad=True)], lr=0.0)


@pytest.mark.parametrize("batch_size, expected_sizes", [(10, [10]), (1, [1] * 10), (4, [4, 4, 2])])
def test_batches_cover_every_sample_once(batch_size, expected_sizes):
    parts = list(batches(10, batch_size, np.random.default_rng(0)))
    assert [len(p) for p in parts] == expected_sizes
    assert sorted(np.concatenate(parts)) == list(range(10))
    assert list(np.concatenate(list(batches(10, batch_size)))) == list(range(10))  # no rng: in order


def test_early_stopping_waits_for_patience_and_restores_best():
    w = Tensor(np.zeros(2), requires_grad=True)
    stopper = EarlyStopping(patience=2, mode="min")
    stops = []
    for epoch, val in enumerate([5.0, 3.0, 4.0, 3.5, 6.0]):
        w.data[:] = epoch
        stops.append(stopper.step(val, [w]))
    assert stops == [False, False, False, True, True]
    assert stopper.best_epoch == 1 and stopper.best == 3.0
    stopper.restore([w])
    np.testing.assert_array_equal(w.data, [1.0, 1.0])
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="lowest")
