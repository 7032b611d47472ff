"""Batched, vectorised augmentation for MRI slices on uint8 image tensors.

Each image gets its own random rotation, scale, shift and horizontal flip (one affine warp
through `grid_sample`), then brightness, contrast and gamma jitter. Vertical flips are left out:
an upside-down head is not a slice a scanner produces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """``N x S x S x 3`` uint8 → ``N x 3 x S x S`` float in [0, 1], channels-last memory.

    With `size`, the images are also resized (antialiased bilinear) to ``size x size``.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    rotate: float = 15.0,
    scale: tuple[float, float] = (0.9, 1.15),
    shift: float = 0.08,
    flip: bool = True,
    intensity: float = 0.2,
) -> torch.Tensor:
    """Randomly transform a batch ``N x 3 x H x W`` of floats in [0, 1]."""
    n = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-rotate, rotate) * math.pi / 180
    zoom = uniform(*scale)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign, cos
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-shift, shift) * 2, uniform(-shift, shift) * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if intensity > 0:
        gain = uniform(1 - intensity, 1 + intensity).view(n, 1, 1, 1)
        gamma = uniform(1 - intensity, 1 + intensity).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = uniform(1 - intensity, 1 + intensity).view(n, 1, 1, 1)
        x = ((x - mean) * contrast + mean) * gain
        x = x.clamp_(0, 1).pow_(gamma)
    return x.contiguous(memory_format=torch.channels_last)
