"""Layers: shapes, parameter discovery, train/eval, and a whole small CNN against PyTorch."""

import numpy as np
import pytest

from braintumor.fundamentals.autograd import Tensor
from braintumor.fundamentals.layers import Activation, Conv2d, Dense, Dropout, Flatten, MaxPool2d, Sequential, mlp
from braintumor.fundamentals.losses import cross_entropy


def test_dense_computes_x_w_plus_b():
    layer = Dense(3, 2, rng=np.random.default_rng(0))
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data + layer.bias.data)
    assert [p.shape for p in layer.parameters()] == [(3, 2), (2,)]


def test_mlp_parameters_and_modes():
    net = mlp([2, 5, 5, 1], activation="tanh")
    assert sum(p.data.size for p in net.parameters()) == (2 * 5 + 5) + (5 * 5 + 5) + (5 + 1)
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_dropout_layer_follows_train_and_eval():
    layer = Dropout(0.5, np.random.default_rng(0))
    x = Tensor(np.ones((10, 10)))
    assert (layer(x).data == 0).any()
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, x.data)
    with pytest.raises(ValueError):
        Dropout(1.5)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Activation("swish")


def test_small_cnn_matches_torch_end_to_end():
    import torch

    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(1, 4, 3, padding=1, rng=rng), Activation("relu"), MaxPool2d(2),
                     Conv2d(4, 6, 3, stride=2, rng=rng), Activation("gelu"), Flatten(), Dense(6, 3, rng=rng))
    x = rng.standard_normal((5, 1, 8, 8))
    y = np.array([0, 1, 2, 1, 0])
    loss = cross_entropy(net(Tensor(x)), y)
    loss.backward()

    conv1, conv2, dense = net.layers[0], net.layers[3], net.layers[6]
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(6, 3)).double()
    with torch.no_grad():
        for ours, theirs in ((conv1, ref[0]), (conv2, ref[3])):
            theirs.weight.copy_(torch.tensor(ours.weight.data))
            theirs.bias.copy_(torch.tensor(ours.bias.data))
        ref[6].weight.copy_(torch.tensor(dense.weight.data.T))  # Dense keeps W as in x out
        ref[6].bias.copy_(torch.tensor(dense.bias.data))
    ref_loss = torch.nn.functional.cross_entropy(ref(torch.tensor(x)), torch.tensor(y))
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    np.testing.assert_allclose(conv1.weight.grad, ref[0].weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(conv2.bias.grad, ref[3].bias.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dense.weight.grad, ref[6].weight.grad.numpy().T, rtol=1e-9, atol=1e-12)
