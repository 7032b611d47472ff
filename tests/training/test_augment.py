import torch

import pytest

from braintumor.model.factory import to_float
from braintumor.training.augment import augment


def test_to_float_layout_and_range():
    x = to_float(torch.full((2, 8, 8, 3), 255, dtype=torch.uint8))
    assert x.shape == (2, 3, 8, 8) and float(x.max()) == 1.0
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_to_float_resizes_with_antialiasing():
    checker = (torch.arange(16).view(4, 4) % 2 == torch.arange(16).view(4, 4) // 4 % 2).repeat(4, 4)  # 16 x 16
    images = (checker.to(torch.uint8) * 255)[None, :, :, None].expand(1, 16, 16, 3).contiguous()
    x = to_float(images, size=8)
    assert x.shape == (1, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x, torch.full_like(x, 0.5), atol=0.02, rtol=0)  # averaged, not sampled


def test_augment_is_random_per_image_and_seeded():
    x = torch.rand(1, 3, 32, 32).repeat(4, 1, 1, 1)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_identity_settings_leave_image_unchanged():
    x = torch.rand(2, 3, 16, 16)
    out = augment(x, torch.Generator().manual_seed(1), rotate=0, scale=(1, 1), shift=0, flip=False, intensity=0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_mixup_blends_pairs_with_beta_weights_and_is_seeded():
    from scipy import stats

    from braintumor.training.augment import mixup

    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    mixed, perm, lam = mixup(x, 0.4, torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(6)) and 0 <= lam <= 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    again = mixup(x, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], mixed) and again[2] == lam
    # The weights follow Beta(alpha, alpha): a Kolmogorov-Smirnov test against it passes, and
    # against a uniform weight it fails.
    g = torch.Generator().manual_seed(2)
    lams = [mixup(x, 0.2, g)[2] for _ in range(500)]
    assert stats.kstest(lams, stats.beta(0.2, 0.2).cdf).pvalue > 0.01
    assert stats.kstest(lams, stats.uniform.cdf).pvalue < 1e-6
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, 0.0, g)


def test_erase_fills_one_rectangle_with_noise_in_the_chosen_share_of_images():
    from braintumor.training.augment import erase

    x = torch.full((400, 3, 20, 30), 2.0)  # 2 lies outside the noise's [0, 1): changed pixels show
    out = erase(x, 0.5, torch.Generator().manual_seed(0), area=(0.05, 0.2))
    changed = out < 2
    hit = changed.flatten(1).any(1)
    assert 150 < hit.sum() < 250  # about half the images, at p = 0.5
    for i in torch.nonzero(hit).flatten().tolist():
        mask = changed[i, 0]
        assert torch.equal(changed[i, 1], mask) and torch.equal(changed[i, 2], mask)  # all channels
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and mask.sum() == box.numel()  # one solid rectangle, nothing outside it
        # the share of the image, allowing for rounding of the sides and clipping at the edges
        assert mask.sum() <= 0.2 * 600 * 1.3 and rows[-1] < 20 and cols[-1] < 30
        assert 0 <= out[i][:, mask].min() and out[i][:, mask].max() < 1
    assert torch.equal(out, erase(x, 0.5, torch.Generator().manual_seed(0), area=(0.05, 0.2)))  # seeded
    assert torch.equal(erase(x, 0.0, torch.Generator()), x)
    assert erase(x, 1.0, torch.Generator()).lt(2).flatten(1).any(1).all()
    with pytest.raises(ValueError, match="prob"):
        erase(x, 1.5, torch.Generator())


def test_degrade_blurs_the_chosen_share_of_images_and_leaves_the_others():
    from braintumor.training.augment import degrade

    stripes = (torch.arange(32) % 2).float().view(1, 1, 1, 32).expand(200, 3, 32, 32).contiguous()  # 1-px stripes
    out = degrade(stripes, 0.5, torch.Generator().manual_seed(0), noise=0.0)
    same = (out == stripes).flatten(1).all(1)
    assert 70 < (~same).sum() < 130  # about half, at p = 0.5
    # a degraded image has lost its finest detail: neighbouring columns differ far less
    def detail(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
    assert torch.all(detail(out[~same]) < 0.5 * detail(stripes[~same]))
    assert out.min() >= 0 and out.max() <= 1
    noisy = degrade(torch.full((50, 3, 16, 16), 0.5), 1.0, torch.Generator().manual_seed(1), scale=(1.0, 1.0))
    assert 0 < noisy.std() < 0.04  # noise only, no stronger than asked
    assert torch.equal(out, degrade(stripes, 0.5, torch.Generator().manual_seed(0), noise=0.0))  # seeded
    assert torch.equal(degrade(stripes, 0.0, torch.Generator()), stripes)
    with pytest.raises(ValueError, match="prob"):
        degrade(stripes, 1.5, torch.Generator())


def test_remap_contrast_keeps_order_or_inverts_the_head_and_leaves_the_background_dark():
    from braintumor.training.augment import remap_contrast

    ramp = torch.linspace(0, 1, 50)
    x = ramp.view(1, 1, 1, 50).expand(600, 3, 4, 50).contiguous()  # a dark band, then brighter "tissue"
    out = remap_contrast(x, 0.5, torch.Generator().manual_seed(0))
    changed = ~torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    assert 240 < changed.sum() < 360  # about half the images, at p = 0.5
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-6) and torch.allclose(out[:, 1], out[:, 2], atol=1e-6)  # one curve
    assert out.min() >= 0 and out.max() <= 1
    row = out[:, 0, 0]  # N x 50
    rising = (row.diff(dim=1) >= -1e-6).all(1)
    head = ramp > 0.04
    falling = (row[:, head].diff(dim=1) <= 1e-6).all(1) & (row[:, ~head] == 0).all(1)
    assert (rising | falling).all()  # a monotone curve, or its inversion inside the head only
    inverted = changed & falling & ~rising
    assert 0.3 < inverted.sum() / changed.sum() < 0.7  # about half of the remapped ones
    assert not torch.equal(row[changed][0], row[changed][1])  # each image its own curve
    assert torch.equal(out, remap_contrast(x, 0.5, torch.Generator().manual_seed(0)))  # seeded
    assert torch.equal(remap_contrast(x, 0.0, torch.Generator()), x)
    with pytest.raises(ValueError, match="prob"):
        remap_contrast(x, -0.1, torch.Generator())
