"""Layers: small objects that hold parameters and apply an operation.

Each layer is called like a function on a `Tensor`. `Module.parameters` finds every parameter
of a layer and of the layers inside it; `Module.train` / `Module.eval` switch the behaviour
of dropout. The parameter layouts follow PyTorch's where they exist, except `Dense`, whose
weight is ``in x out`` so that the forward pass reads ``x @ W + b``.
"""

from __future__ import annotations

import numpy as np

from . import activations, conv
from .autograd import Tensor, matmul
from .init import initialize


class Module:
    """Base class: parameter discovery and the train/eval switch."""

    training = True

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def parameters(self) -> list[Tensor]:
        """Every trainable tensor of this layer and its sub-layers, in a stable order."""
        found: list[Tensor] = []
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Tensor) and item.requires_grad:
                    found.append(item)
                elif isinstance(item, Module):
                    found.extend(item.parameters())
        return found

    def modules(self) -> list["Module"]:
        """This module and all modules inside it."""
        found: list[Module] = [self]
        for value in vars(self).values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, Module):
                    found.extend(item.modules())
        return found

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()


class Dense(Module):
    """Fully connected layer, ``x @ W + b``, with W of shape ``in x out``.

    Parameters
    ----------
    n_in, n_out : int
    init : str
        Weight initialization (see `braintumor.fundamentals.init.SCHEMES`); biases start at 0.
    scale : float
        Value / range / σ for the ``constant``, ``uniform`` and ``normal`` schemes.
    rng : numpy.random.Generator
    dtype : numpy dtype
    """

    def __init__(self, n_in: int, n_out: int, init: str = "he", rng: np.random.Generator | None = None, dtype=np.float64, scale: float = 0.1):
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weight = Tensor(initialize(init, (n_in, n_out), n_in, n_out, rng, dtype, scale), requires_grad=True)
        self.bias = Tensor(np.zeros(n_out, dtype=dtype), requires_grad=True)

    def forward(self, x: Tensor) -> Tensor:
        return matmul(x, self.weight) + self.bias


class Conv2d(Module):
    """2-D convolution layer (cross-correlation), weight ``out x in x k x k``.

    Parameters
    ----------
    in_channels, out_channels, kernel : int
    stride, padding : int
    init : str
        Weight initialization; fan-in is in_channels·k², fan-out out_channels·k².
    rng : numpy.random.Generator
    dtype : numpy dtype
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0, init: str = "he", rng: np.random.Generator | None = None, dtype=np.float64):
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (out_channels, in_channels, kernel, kernel)
        self.weight = Tensor(initialize(init, shape, in_channels * kernel * kernel, out_channels * kernel * kernel, rng, dtype), requires_grad=True)
        self.bias = Tensor(np.zeros(out_channels, dtype=dtype), requires_grad=True)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return conv.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class MaxPool2d(Module):
    """Max pooling over `kernel` x `kernel` windows, `stride` defaulting to `kernel`."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return conv.max_pool2d(x, self.kernel, self.stride)


class Dropout(Module):
    """Inverted dropout with drop probability `p`; the identity in eval mode."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x: Tensor) -> Tensor:
        return conv.dropout(x, self.p, self.training, self.rng)


class Flatten(Module):
    """N x ... to N x features."""

    def forward(self, x: Tensor) -> Tensor:
        return conv.flatten(x)


class Activation(Module):
    """An activation function as a layer: ``Activation("relu")``."""

    def __init__(self, name: str):
        if name not in activations.ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; use one of {', '.join(activations.ACTIVATIONS)}")
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return activations.ACTIVATIONS[self.name](x)


class Sequential(Module):
    """Layers applied one after the other."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def mlp(sizes: list[int], activation: str = "relu", init: str = "he", rng: np.random.Generator | None = None, dtype=np.float64, scale: float = 0.1) -> Sequential:
    """A multi-layer perceptron: Dense layers of `sizes` with `activation` between them.

    ``mlp([2, 8, 1])`` is 2 inputs, one hidden layer of 8 units and 1 output (no activation
    after the last layer: it produces logits or regression values).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    layers: list[Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, init, rng, dtype, scale))
        if i < len(sizes) - 2:
            layers.append(Activation(activation))
    return Sequential(*layers)
