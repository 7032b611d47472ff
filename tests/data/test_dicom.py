"""DICOM reading, on files written here with pydicom: rescale, window, MONOCHROME1, multi-frame,
and one clear error for each kind of unusable file."""

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from dicomfiles import _dataset, write_dicom

from braintumor.data.dicom import iter_dicom_frames, read_dicom
from braintumor.errors import ImageError
from braintumor.data.imageio import iter_frames, read_image


def _ramp(lo: int, hi: int, shape=(16, 16)) -> np.ndarray:
    return np.linspace(lo, hi, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


def test_slope_intercept_then_window(tmp_path):
    # stored 0..1000 → rescaled -1000..1000; window [-200, 200] maps that span onto 0..255
    stored = np.array([[0, 400, 500, 600, 1000, 450]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=400)
    gray = read_dicom(path)[0, :, 0].astype(int)
    assert list(gray[[0, 1, 3, 4]]) == [0, 0, 255, 255]  # clipped below and above the window
    assert abs(gray[2] - 128) <= 1  # value 0 is the window's center
    assert abs(gray[5] - round((-100 + 0.5) / 399 * 255 + 127.5)) <= 1


def test_no_window_uses_the_frames_range(tmp_path):
    path = write_dicom(tmp_path / "mr.dcm", _ramp(100, 3000))
    rgb = read_dicom(path)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert np.all(np.diff(rgb[:, :, 0].ravel().astype(int)) >= 0)


def test_monochrome1_is_inverted(tmp_path):
    pixels = _ramp(0, 4000)
    normal = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels))
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - normal)


def test_multi_frame_every_or_chosen_frame(tmp_path):
    frames = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (10, 20, 30)])
    frames[:, 0, 0] = 0  # give each frame a range
    path = write_dicom(tmp_path / "cine.dcm", frames)
    got = list(iter_dicom_frames(path))
    assert [number for number, _ in got] == [1, 2, 3]
    assert all(rgb[1, 1, 0] == 255 and rgb[0, 0, 0] == 0 for _, rgb in got)
    assert [n for n, _ in iter_frames(path, frame=2)] == [2]
    assert read_dicom(path, frame=3).shape == (8, 8, 3)
    with pytest.raises(ImageError, match="has 3 frames"):
        read_dicom(path)
    with pytest.raises(ImageError, match="no frame 5"):
        read_dicom(path, frame=5)


def test_per_frame_window_from_functional_groups(tmp_path):
    frames = np.stack([_ramp(0, 1000), _ramp(0, 1000)])
    ds = _dataset()
    ds.set_pixel_data(frames, "MONOCHROME2", bits_stored=16)
    windows = [(250, 100), (750, 100)]
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [Dataset() for _ in windows]
    )
    for item, (center, width) in zip(ds.PerFrameFunctionalGroupsSequence, windows):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item.FrameVOILUTSequence = Sequence([voi])
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    (_, first), (_, second) = iter_dicom_frames(tmp_path / "enhanced.dcm")
    # the first window shows the dark quarter, the second the bright one
    assert first[:, :, 0].mean() > second[:, :, 0].mean()
    assert second[0, 0, 0] == 0 and first[-1, -1, 0] == 255


def test_read_image_routes_dicom_with_or_without_extension(tmp_path):
    path = write_dicom(tmp_path / "scan.dcm", _ramp(0, 500))
    no_extension = tmp_path / "IM0001"
    no_extension.write_bytes(path.read_bytes())
    assert np.array_equal(read_image(path), read_image(no_extension))


def test_no_pixel_data(tmp_path):
    ds = _dataset()
    ds.Rows, ds.Columns = 4, 4
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="no pixel data"):
        read_image(tmp_path / "report.dcm")


def test_compressed_without_installed_decoder(tmp_path):
    from pydicom import uid
    from pydicom.pixels import get_decoder

    missing = [s for s in (uid.JPEGLossless, uid.JPEGLSLossless, uid.HTJ2KLossless) if not get_decoder(s).is_available]
    if not missing:
        pytest.skip("every candidate codec is installed here")
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = missing[0]
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(60) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "lossless.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="no decoder for it is installed") as info:
        read_image(tmp_path / "lossless.dcm")
    assert "install" in info.value.hint


def test_not_a_dicom_file(tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"definitely not DICOM" * 20)
    with pytest.raises(ImageError, match="not a DICOM file"):
        read_image(tmp_path / "fake.dcm")


def test_huge_dicom_refused_before_decoding(tmp_path, monkeypatch):
    import braintumor.data.imageio as io

    path = write_dicom(tmp_path / "big.dcm", _ramp(0, 9, (100, 100)))
    monkeypatch.setattr(io, "MAX_PIXELS", 5000)
    with pytest.raises(ImageError, match="too large"):
        io.read_image(path)
