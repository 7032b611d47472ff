"""Convolution, max pooling, dropout and flatten as graph operations (images are N x C x H x W).

Convolution here is *cross-correlation*, the definition the original study uses (and every deep
learning library): the kernel slides over the image without being flipped, and each output
pixel is the sum of the elementwise product of the kernel and the patch under it,

    out[f, y, x] = b[f] + Σ_c Σ_i Σ_j  w[f, c, i, j] · in[c, y·s + i, x·s + j]

with stride s, after padding the input with `padding` zeros on every side. The output side is
⌊(H + 2p - k) / s⌋ + 1.

**im2col.** Looping over output pixels in Python is far too slow for real images. Instead every
k x k x C patch is laid out as one row of a matrix ("image to columns"); the convolution is then
one matrix product of that matrix with the filters, which NumPy hands to an optimised BLAS.
`numpy.lib.stride_tricks.sliding_window_view` builds the patches as a view without copying.
The backward pass is the transpose: the patch gradients are added back onto the pixels they
came from (col2im), one kernel offset at a time.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .autograd import Tensor, as_tensor, make, reshape


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Side of a convolution or pooling output."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_geometry(name: str, shape, kernel: int, stride: int, padding: int) -> None:
    if len(shape) != 4:
        raise ValueError(f"{name} takes N x C x H x W input, got shape {shape}")
    if stride < 1 or padding < 0 or kernel < 1:
        raise ValueError(f"{name}: need kernel >= 1, stride >= 1, padding >= 0; got {kernel}, {stride}, {padding}")
    if min(shape[2], shape[3]) + 2 * padding < kernel:
        raise ValueError(f"{name}: a {kernel}x{kernel} kernel does not fit a {shape[2]}x{shape[3]} input with padding {padding}")


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: int) -> np.ndarray:
    """Patches of an (already padded) N x C x H x W array as rows: (N·Ho·Wo) x (C·kh·kw)."""
    kh, kw = kernel
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,kh,kw
    n, c, ho, wo = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def col2im(cols: np.ndarray, padded_shape: tuple, kernel: tuple[int, int], stride: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Add patch rows back onto an image of `padded_shape` (the adjoint of `im2col`)."""
    n, c = padded_shape[:2]
    kh, kw = kernel
    ho, wo = out_hw
    patches = cols.reshape(n, ho, wo, c, kh, kw)
    image = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            image[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return image


def conv2d(x, weight, bias=None, stride: int = 1, padding: int = 0) -> Tensor:
    """2-D cross-correlation.

    Parameters
    ----------
    x : Tensor
        N x C x H x W input.
    weight : Tensor
        F x C x kh x kw filters.
    bias : Tensor, optional
        F biases.
    stride, padding : int
        Step of the sliding window; zeros added on each side first.

    Returns
    -------
    Tensor
        N x F x Ho x Wo.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    f, c, kh, kw = weight.shape
    _check_geometry("conv2d", x.shape, max(kh, kw), stride, padding)
    if x.shape[1] != c:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but the filters expect {c}")
    n, _, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    padded = np.pad(x.data, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x.data
    cols = im2col(padded, (kh, kw), stride)  # (N·Ho·Wo, C·kh·kw)
    w_mat = weight.data.reshape(f, -1)  # (F, C·kh·kw)
    out = cols @ w_mat.T
    if bias is not None:
        bias = as_tensor(bias)
        out += bias.data
    out = out.reshape(n, ho, wo, f).transpose(0, 3, 1, 2)

    def rule(g):
        g_rows = g.transpose(0, 2, 3, 1).reshape(-1, f)  # (N·Ho·Wo, F)
        grad_w = (g_rows.T @ cols).reshape(weight.shape)
        grad_padded = col2im(g_rows @ w_mat, padded.shape, (kh, kw), stride, (ho, wo))
        grad_x = grad_padded[:, :, padding : padding + h, padding : padding + w]
        grads = (grad_x, grad_w)
        return grads + ((g_rows.sum(axis=0),) if bias is not None else ())

    parents = (x, weight) + ((bias,) if bias is not None else ())
    return make(np.ascontiguousarray(out), parents, rule, "conv2d")


def max_pool2d(x, kernel: int = 2, stride: int | None = None) -> Tensor:
    """Maximum over each `kernel` x `kernel` window (no padding); `stride` defaults to `kernel`.

    The gradient flows only to the position that held the maximum (the first one on ties).
    """
    x = as_tensor(x)
    stride = kernel if stride is None else stride
    _check_geometry("max_pool2d", x.shape, kernel, stride, 0)
    n, c, h, w = x.shape
    windows = sliding_window_view(x.data, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = windows.shape[2:4]
    flat = windows.reshape(n, c, ho, wo, kernel * kernel)
    winner = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, winner[..., None], axis=-1)[..., 0]

    def rule(g):
        grad = np.zeros_like(x.data)
        for i in range(kernel):
            for j in range(kernel):
                grad[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += g * (winner == i * kernel + j)
        return (grad,)

    return make(out, (x,), rule, "max_pool2d")


def dropout(x, p: float, training: bool, rng: np.random.Generator) -> Tensor:
    """Inverted dropout: in training, zero each value with probability `p` and scale the rest by
    1 / (1 - p), so the expected activation is unchanged and evaluation needs no rescaling.
    """
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1.0 - p)
    return make(x.data * mask, (x,), lambda g: (g * mask,), "dropout")


def flatten(x) -> Tensor:
    """N x ... to N x (product of the rest)."""
    x = as_tensor(x)
    return reshape(x, (x.shape[0], -1))
