import numpy as np
import pytest
from PIL import Image

from braintumor.errors import ImageError
from braintumor.data.imageio import read_image


def _save(path, arr, mode=None, **kw):
    img = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp", "tif"])
def test_formats_read_as_rgb_uint8(tmp_path, ext):
    arr = np.zeros((20, 30, 3), dtype=np.uint8)
    arr[5:15, 10:20] = (200, 100, 50)
    out = read_image(_save(tmp_path / f"a b (1).{ext}", arr))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert abs(int(out[10, 15, 0]) - 200) < 8  # jpeg is lossy


def test_grayscale_replicated(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = read_image(_save(tmp_path / "g.png", gray))
    assert out.shape == (16, 16, 3)
    assert (out[:, :, 0] == gray).all() and (out[:, :, 2] == gray).all()


def test_rgba_composited_on_black(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:4, :, 3] = 255  # top half opaque white, bottom half transparent
    out = read_image(_save(tmp_path / "a.png", rgba))
    assert (out[:4] == 255).all() and (out[4:] == 0).all()


def test_palette_expanded(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert tuple(out[1, 1]) == (255, 0, 0) and tuple(out[0, 0]) == (0, 0, 0)


def test_16bit_rescaled_by_range(tmp_path):
    arr = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert np.all(np.diff(out[:, :, 0].ravel().astype(int)) >= 0)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is not an image", "not an image")],
)
def test_bad_bytes_raise_clear_error(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    full = _save(tmp_path / "full.jpg", arr).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageError, match="truncated|decode"):
        read_image(tmp_path / "cut.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot open"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    import braintumor.data.imageio as io

    _save(tmp_path / "big.png", np.zeros((100, 100), dtype=np.uint8))
    monkeypatch.setattr(io, "MAX_PIXELS", 5000)
    with pytest.raises(ImageError, match="too large"):
        io.read_image(tmp_path / "big.png")


def test_16bit_tiff_rescaled_by_range(tmp_path):
    arr = np.linspace(0, 60000, 100, dtype=np.uint16).reshape(10, 10)
    Image.fromarray(arr).save(tmp_path / "scan.tif")
    out = read_image(tmp_path / "scan.tif")
    assert out.shape == (10, 10, 3) and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert np.all(np.diff(out[:, :, 0].ravel().astype(int)) >= 0)
