"""Convolution, pooling, dropout and flatten against PyTorch and the loop-by-loop definition."""

import numpy as np
import pytest

from braintumor.fundamentals import conv
from braintumor.fundamentals.autograd import Tensor

rng = np.random.default_rng(0)


@pytest.mark.parametrize("stride, padding, kernel", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 2), (3, 2, 5)])
def test_conv2d_matches_torch(stride, padding, kernel, check_op):
    import torch

    x = rng.standard_normal((2, 3, 7, 8))
    w = rng.standard_normal((4, 3, kernel, kernel))
    b = rng.standard_normal(4)
    check_op(lambda x, w, b: conv.conv2d(x, w, b, stride, padding),
             lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding), [x, w, b])


def test_conv2d_without_bias_matches_torch(check_op):
    import torch

    check_op(lambda x, w: conv.conv2d(x, w, padding=1), lambda x, w: torch.nn.functional.conv2d(x, w, padding=1),
             [rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))])


def test_conv2d_is_cross_correlation_as_defined():
    image = rng.standard_normal((6, 7))
    kernel = rng.standard_normal((3, 2))
    out = conv.conv2d(Tensor(image[None, None]), Tensor(kernel[None, None])).data[0, 0]
    expected = [[(image[y : y + 3, x : x + 2] * kernel).sum() for x in range(6)] for y in range(4)]
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), (3, 1)])
def test_max_pool_matches_torch(kernel, stride, check_op):
    import torch

    x = rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0  # distinct values: no ties
    check_op(lambda t: conv.max_pool2d(t, kernel, stride),
             lambda t: torch.nn.functional.max_pool2d(t, kernel, stride if stride else kernel), [x])


def test_flatten_matches_torch(check_op):
    check_op(conv.flatten, lambda t: t.flatten(1), [rng.standard_normal((2, 3, 4))])


def test_dropout_gradient_is_its_mask(check_op):
    x = rng.standard_normal((50, 40))
    mask_of = lambda: conv.dropout(Tensor(np.ones((50, 40))), 0.3, True, np.random.default_rng(5)).data  # noqa: E731
    mask = mask_of()
    assert set(np.unique(mask)) == {0.0, 1.0 / 0.7}
    import torch

    check_op(lambda t: conv.dropout(t, 0.3, True, np.random.default_rng(5)), lambda t: t * torch.tensor(mask), [x])


def test_dropout_is_inverted_and_identity_in_eval():
    x = Tensor(np.ones((200, 200)))
    out = conv.dropout(x, 0.25, True, np.random.default_rng(0)).data
    assert (out == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert out.mean() == pytest.approx(1.0, abs=0.02)  # survivors scaled by 1 / (1 - p)
    assert conv.dropout(x, 0.25, False, np.random.default_rng(0)) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        conv.dropout(x, 1.0, True, np.random.default_rng(0))


def test_output_size_formula():
    for h, k, s, p in [(64, 3, 1, 1), (7, 3, 2, 1), (5, 5, 1, 0), (10, 4, 3, 2)]:
        out = conv.conv2d(Tensor(np.zeros((1, 1, h, h))), Tensor(np.zeros((1, 1, k, k))), stride=s, padding=p)
        assert out.shape[-1] == conv.output_size(h, k, s, p) == (h + 2 * p - k) // s + 1


def test_bad_shapes_get_clear_messages():
    with pytest.raises(ValueError, match="3 channels but the filters expect 2"):
        conv.conv2d(Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((4, 2, 3, 3))))
    with pytest.raises(ValueError, match="N x C x H x W"):
        conv.max_pool2d(Tensor(np.zeros((5, 5))))
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d(Tensor(np.zeros((1, 1, 2, 2))), Tensor(np.zeros((1, 1, 3, 3))))
