import numpy as np
import pytest

from braintumor.errors import BrainTumorError
from braintumor.data.preprocess import Preprocess


def test_crops_black_margins_and_keeps_aspect():
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[20:80, 50:110] = 150  # a 60 x 60 head off-centre in a wide frame
    out = Preprocess(image_size=30)(img)
    assert out.shape == (30, 30, 3)
    assert out.min() >= 140  # the crop removed every black margin


def test_pads_non_square_without_distortion():
    img = np.full((20, 40, 3), 200, dtype=np.uint8)
    out = Preprocess(image_size=40, crop_foreground=False)(img)
    assert (out[:10] == 0).all() and (out[30:] == 0).all() and (out[10:30] == 200).all()


def test_blank_image_is_kept_whole():
    out = Preprocess(image_size=16)(np.zeros((50, 50, 3), dtype=np.uint8))
    assert out.shape == (16, 16, 3) and out.max() == 0


def test_round_trip_and_validation():
    p = Preprocess(image_size=96, crop_foreground=False)
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(BrainTumorError, match=r"image_size \(--image-size\) must be an integer in 16..1024"):
        Preprocess(image_size=4)
    with pytest.raises(ValueError, match="uint8"):
        p(np.zeros((4, 4), dtype=np.float32))


def _dim_head():
    """A low-contrast 'head' (gray levels 60..99 in a gradient) on a black frame."""
    img = np.zeros((80, 80, 3), dtype=np.uint8)
    img[10:70, 10:70] = (60 + np.arange(60) * 40 // 60).astype(np.uint8)[None, :, None]
    return img


def test_equalize_spreads_the_heads_gray_levels_and_keeps_the_background_black():
    img = _dim_head()
    out = Preprocess(image_size=80, crop_foreground=False, equalize=True)(img)
    head = out[10:70, 10:70]
    assert head.max() == 255 and head.min() < 20  # 40 gray levels stretched to the full range
    assert out[:10].max() == 0 and out[:, :10].max() == 0  # histogram of the head only
    assert (np.diff(head[0, :, 0].astype(int)) >= 0).all()  # order of intensities kept
    plain = Preprocess(image_size=80, crop_foreground=False)(img)
    assert plain[10:70, 10:70].max() == 99  # off by default


def test_equalize_undoes_a_monotone_change_of_contrast():
    img = _dim_head()
    brighter = img.copy()
    head = img[10:70, 10:70].astype(int)
    brighter[10:70, 10:70] = head + 40 + (head - 60) ** 2 // 40  # brighter, curved, no two levels merged
    p = Preprocess(image_size=80, crop_foreground=False, equalize=True)
    assert not np.array_equal(img, brighter)
    np.testing.assert_array_equal(p(img), p(brighter))


def test_equalize_round_trips_and_older_checkpoints_read_as_off():
    p = Preprocess(image_size=64, equalize=True)
    assert Preprocess.from_dict(p.to_dict()) == p
    old = Preprocess(image_size=64).to_dict()
    del old["equalize"]
    assert Preprocess.from_dict(old).equalize is False
