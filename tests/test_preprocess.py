import numpy as np
import pytest

from braintumor.preprocess import Preprocess


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
    with pytest.raises(ValueError, match="image_size"):
        Preprocess(image_size=4)
    with pytest.raises(ValueError, match="uint8"):
        p(np.zeros((4, 4), dtype=np.float32))
