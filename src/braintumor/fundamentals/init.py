"""Weight initialization schemes.

A layer's *fan-in* is the number of inputs each unit sums (a dense layer's input size; a
convolution's C·kh·kw) and its *fan-out* the number of units each input feeds.

- zero / constant: every unit starts identical, and stays identical (symmetry is never broken;
  see the ``initialization`` lesson).
- uniform U(-r, r) and normal N(0, σ²): random, with a scale chosen by hand.
- Xavier/Glorot (2010): Var(w) = 2 / (fan_in + fan_out), which keeps the variance of the
  signal roughly constant forwards *and* backwards through tanh or sigmoid layers.
- He (2015): Var(w) = 2 / fan_in, which does the same for ReLU, which zeroes half its inputs.
"""

from __future__ import annotations

import math

import numpy as np


def zeros(shape, dtype=np.float64) -> np.ndarray:
    """All zeros."""
    return np.zeros(shape, dtype=dtype)


def constant(shape, value: float, dtype=np.float64) -> np.ndarray:
    """Every entry equal to `value`."""
    return np.full(shape, value, dtype=dtype)


def uniform(shape, r: float, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Independent draws from U(-r, r)."""
    return rng.uniform(-r, r, size=shape).astype(dtype)


def normal(shape, sigma: float, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Independent draws from N(0, σ²)."""
    return (sigma * rng.standard_normal(shape)).astype(dtype)


def xavier_uniform(shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Glorot uniform: U(-r, r) with r = √(6 / (fan_in + fan_out)), so Var = 2 / (fan_in + fan_out)."""
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), rng, dtype)


def xavier_normal(shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Glorot normal: N(0, 2 / (fan_in + fan_out))."""
    return normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def he_normal(shape, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """He (Kaiming) normal: N(0, 2 / fan_in)."""
    return normal(shape, math.sqrt(2.0 / fan_in), rng, dtype)


def he_uniform(shape, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """He uniform: U(-r, r) with r = √(6 / fan_in), so Var = 2 / fan_in."""
    return uniform(shape, math.sqrt(6.0 / fan_in), rng, dtype)


SCHEMES = ("zero", "constant", "uniform", "normal", "xavier", "xavier_normal", "he", "he_uniform")


def initialize(scheme: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float64, scale: float = 0.1) -> np.ndarray:
    """Weights of `shape` by the scheme's name.

    Parameters
    ----------
    scheme : str
        One of `SCHEMES`. ``"xavier"`` is Glorot uniform and ``"he"`` He normal.
    scale : float
        The value of ``"constant"``, r of ``"uniform"``, σ of ``"normal"``.
    """
    if scheme == "zero":
        return zeros(shape, dtype)
    if scheme == "constant":
        return constant(shape, scale, dtype)
    if scheme == "uniform":
        return uniform(shape, scale, rng, dtype)
    if scheme == "normal":
        return normal(shape, scale, rng, dtype)
    if scheme == "xavier":
        return xavier_uniform(shape, fan_in, fan_out, rng, dtype)
    if scheme == "xavier_normal":
        return xavier_normal(shape, fan_in, fan_out, rng, dtype)
    if scheme == "he":
        return he_normal(shape, fan_in, rng, dtype)
    if scheme == "he_uniform":
        return he_uniform(shape, fan_in, rng, dtype)
    raise ValueError(f"unknown initialization {scheme!r}; use one of {', '.join(SCHEMES)}")
