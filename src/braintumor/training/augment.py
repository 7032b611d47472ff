"""Batched, vectorised augmentation for MRI slices on uint8 image tensors.

Each image gets its own random rotation, scale, shift and horizontal flip (one affine warp
through `grid_sample`), then brightness, contrast and gamma jitter. Vertical flips are left out:
an upside-down head is not a slice a scanner produces. `erase` (optional, ``--erase-prob``)
overwrites a random rectangle of some images with noise; `mixup` (optional, ``--mixup-alpha``)
blends a batch with a shuffled copy of itself; `remap_contrast` (optional, ``--contrast-prob``)
changes tissue contrast so that an MRI sequence's look stops telling classes apart; `degrade`
(optional, ``--degrade-prob``) blurs images by a random loss of resolution and adds noise, as
scans from smaller or noisier sources look.
(The fixed view that test-time augmentation averages with each image is
`braintumor.model.views.MirrorView`.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def erase(
    x: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 0.2),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing: with probability `prob` per image, fill one rectangle with uniform noise.

    The rectangle covers a share of the image drawn uniformly from `area`, with a height/width
    ratio drawn log-uniformly from `aspect`, at a uniformly drawn position (clipped to the image).
    All draws go through `generator`, so seeded runs repeat. `x` is ``N x C x H x W`` in [0, 1].
    """
    if not 0 <= prob <= 1:
        raise ValueError(f"erase prob must be in [0, 1], got {prob}")
    n, _, h, w = x.shape

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    chosen = torch.rand(n, generator=generator) < prob
    share = uniform(*area)
    ratio = torch.exp(uniform(math.log(aspect[0]), math.log(aspect[1])))
    box_h = (torch.sqrt(share * ratio) * h).round().clamp(1, h)
    box_w = (torch.sqrt(share / ratio) * w).round().clamp(1, w)
    top = (uniform(0, 1) * (h - box_h + 1)).floor()
    left = (uniform(0, 1) * (w - box_w + 1)).floor()
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    rows = torch.arange(h, dtype=top.dtype).view(1, h)
    cols = torch.arange(w, dtype=left.dtype).view(1, w)
    in_rows = (rows >= top.view(n, 1)) & (rows < (top + box_h).view(n, 1))
    in_cols = (cols >= left.view(n, 1)) & (cols < (left + box_w).view(n, 1))
    mask = (in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)) & chosen.view(n, 1, 1, 1)
    return torch.where(mask, noise, x).contiguous(memory_format=torch.channels_last)


def remap_contrast(
    x: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    knots: int = 4,
    invert: float = 0.5,
    background: float = 0.04,
) -> torch.Tensor:
    """Tissue-contrast remapping: with probability `prob` per image, pass its intensities through a
    random monotone curve, and for half of those (`invert`) also invert the head, not the background.

    The curve is piecewise linear from (0, 0) to (1, 1) through `knots` inner points whose heights
    are sorted uniform draws, so dark, middle and bright tissue get stretched or squeezed by
    different amounts. Inverting pixels brighter than `background` turns dark cerebrospinal fluid
    bright, roughly what a T2-weighted slice shows where a T1-weighted one is dark. The aim is a
    network that cannot tell classes apart by an MRI sequence's or a source's look, since in
    Sartaj's Training folder those go with the class. On Sartaj's `dedup` validation sets it
    traded Training-folder accuracy for Testing-folder accuracy, with no net gain
    (docs/recipes.md), so it is off by default. All draws go through `generator`.
    `x` is ``N x C x H x W`` in [0, 1]; the channels share one curve.
    """
    if not 0 <= prob <= 1:
        raise ValueError(f"contrast remapping prob must be in [0, 1], got {prob}")
    n = x.shape[0]
    chosen = torch.rand(n, generator=generator) < prob
    flip = torch.rand(n, generator=generator) < invert
    inner = torch.rand(n, knots, generator=generator).sort(dim=1).values
    picked = torch.nonzero(chosen).flatten()
    if picked.numel() == 0:
        return x
    m, flip = picked.numel(), flip[picked]
    xs = x[picked]
    heights = torch.cat([torch.zeros(m, 1), inner[picked], torch.ones(m, 1)], dim=1).to(x.dtype)
    segments = knots + 1
    pos = xs.reshape(m, -1).clamp(0, 1) * segments
    seg = pos.floor().clamp_(max=segments - 1)
    frac = pos.sub_(seg)
    seg = seg.long()
    low = heights.gather(1, seg)
    mapped = (heights.gather(1, seg + 1).sub_(low).mul_(frac).add_(low)).view_as(xs)
    if flip.any():
        f = torch.nonzero(flip).flatten()
        head = xs[f].amax(dim=1, keepdim=True) > background
        inverted = (1 - mapped[f]).clamp_(min=1e-3)
        # A gamma that gives the inverted head the mean brightness of the original one: brain
        # tissue stays mid-gray and only what was dark (fluid) turns bright, not a washed-out head.
        share = head.flatten(1).float().mean(1).clamp(min=1e-3)
        before = (xs[f] * head).flatten(1).mean(1) / share
        after = (inverted * head).flatten(1).mean(1) / share
        gamma = (before.clamp(0.02, 0.98).log() / after.clamp(0.02, 0.98).log()).clamp(0.5, 4.0)
        mapped[f] = torch.where(head, inverted.pow_(gamma.view(-1, 1, 1, 1).to(x.dtype)), 0.0)
    out = x.clone()
    out[picked] = mapped
    return out.contiguous(memory_format=torch.channels_last)


def degrade(
    x: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 0.85),
    noise: float = 0.04,
) -> torch.Tensor:
    """Image degradation: with probability `prob` per image, lose resolution and add noise.

    A chosen image is shrunk to a share of its side drawn uniformly from `scale` (antialiased)
    and enlarged back (bilinear), then gets Gaussian noise of a standard deviation drawn
    uniformly from ``[0, noise]``. Sartaj's sources differ in resolution and sharpness, and in
    its Training folder those go with the class (``braintumor audit``'s shortcut check): a
    network shown degraded copies cannot lean on sharpness alone. All draws go through
    `generator`. `x` is ``N x C x H x W`` in [0, 1].
    """
    if not 0 <= prob <= 1:
        raise ValueError(f"degrade prob must be in [0, 1], got {prob}")
    n, _, h, w = x.shape
    chosen = torch.rand(n, generator=generator) < prob
    shares = torch.rand(n, generator=generator) * (scale[1] - scale[0]) + scale[0]
    sigmas = torch.rand(n, generator=generator) * noise
    picked = torch.nonzero(chosen).flatten()
    if picked.numel() == 0:
        return x
    out = x.clone()
    for k in picked.tolist():
        size = (max(2, round(h * float(shares[k]))), max(2, round(w * float(shares[k]))))
        small = F.interpolate(x[k : k + 1], size=size, mode="bilinear", antialias=True, align_corners=False)
        out[k : k + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    grain = torch.randn(picked.numel(), *x.shape[1:], generator=generator, dtype=x.dtype)
    out[picked] = (out[picked] + grain * sigmas[picked].view(-1, 1, 1, 1).to(x.dtype)).clamp_(0, 1)
    return out.contiguous(memory_format=torch.channels_last)


def mixup(x: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a shuffled copy of itself (mixup): ``lam * x + (1 - lam) * x[perm]``.

    ``lam`` is drawn from Beta(`alpha`, `alpha`) through `generator` (so seeded runs repeat).
    Returns ``(mixed, perm, lam)``; the loss is then ``lam * CE(y) + (1 - lam) * CE(y[perm])``.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be positive, got {alpha}")
    from scipy.special import betaincinv  # the Beta quantile: seeded through `generator`

    lam = float(betaincinv(alpha, alpha, torch.rand(1, generator=generator, dtype=torch.float64).item()))
    perm = torch.randperm(x.shape[0], generator=generator)
    return x.mul(lam).add_(x[perm], alpha=1 - lam), perm, lam
