"""Losses against PyTorch, including cross-entropy at extreme logits."""

import numpy as np
import pytest

from braintumor.fundamentals import losses
from braintumor.fundamentals.autograd import Tensor

rng = np.random.default_rng(0)
PRED, TARGET = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
LABELS = np.array([0, 2, 1, 3, 3, 0])


def test_mse_matches_torch(check_op):
    import torch

    check_op(lambda p, t: losses.mse(p, t), torch.nn.functional.mse_loss, [PRED, TARGET])


def test_mae_matches_torch(check_op):
    import torch

    check_op(lambda p, t: losses.mae(p, t), torch.nn.functional.l1_loss, [PRED, TARGET])


def test_cross_entropy_matches_torch(check_op):
    import torch

    labels = torch.tensor(LABELS)
    check_op(lambda z: losses.cross_entropy(z, LABELS), lambda z: torch.nn.functional.cross_entropy(z, labels),
             [rng.standard_normal((6, 4)) * 3])


def test_cross_entropy_is_finite_for_extreme_logits():
    import torch

    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [0.0, 0.0]])
    labels = np.array([1, 1, 0])
    z = Tensor(logits, requires_grad=True)
    loss = losses.cross_entropy(z, labels)
    loss.backward()
    ref = torch.tensor(logits, requires_grad=True)
    torch.nn.functional.cross_entropy(ref, torch.tensor(labels)).backward()
    assert loss.item() == pytest.approx((2000.0 + np.log(2)) / 3)
    np.testing.assert_allclose(z.grad, ref.grad.numpy(), atol=1e-15)


def test_bad_labels_get_a_clear_message():
    z = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0..2"):
        losses.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        losses.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="2 rows"):
        losses.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        losses.mse(Tensor(np.zeros(3)), Tensor(np.zeros(4)))
