"""NIfTI volumes read as slices: the axial axis from the affine (RAS, LPS, permuted axes), slices
shown anterior up with the patient's right on the left, a robust intensity window, slices without
brain skipped and counted, and one clear error for every bad volume. Synthetic volumes only."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from braintumor.data import nifti
from braintumor.data.imageio import iter_frames, load_frames, sniff_format
from braintumor.data.nifti import is_nifti_bytes, read_nifti, read_nifti_bytes
from braintumor.errors import ImageError

SHAPE = (64, 64, 24)  # x (right), y (anterior), z (superior) in RAS


def head_volume(blob: bool = True) -> np.ndarray:
    """A RAS volume: an ellipsoid 'head' in slices 3..22 (indices 2..21), empty slices at both
    ends, a marker at the patient's right-anterior edge of every head slice, and a bright blob in
    slices 11..14 (indices 10..13)."""
    x, y, z = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    vol = np.zeros(SHAPE, dtype=np.float32)
    head = ((x - 32) / 26) ** 2 + ((y - 32) / 22) ** 2 + ((z - 11.5) / 11) ** 2 <= 1
    vol[head] = 100
    vol[:, :, :2] = vol[:, :, 22:] = 0
    marker = ((x - 48) ** 2 + (y - 46) ** 2 <= 9) & (z >= 2) & (z <= 21)  # right (x>32), anterior (y>32)
    vol[marker] = 180
    if blob:
        vol[((x - 24) ** 2 + (y - 28) ** 2 <= 25) & (z >= 10) & (z <= 13)] = 250
    return vol


def save(tmp_path, data, affine=np.eye(4), name="vol.nii.gz", kind=nib.Nifti1Image):
    path = tmp_path / name
    nib.save(kind(np.asarray(data), affine), str(path))
    return path


def marker_quadrant(gray: np.ndarray) -> tuple[str, str]:
    """Where the marker (value ~180 after windowing, between head and blob) lies: (top|bottom, left|right)."""
    ys, xs = np.nonzero((gray > 150) & (gray < 230))
    h, w = gray.shape
    return ("top" if ys.mean() < h / 2 else "bottom"), ("left" if xs.mean() < w / 2 else "right")


def test_ras_volume_axial_slices_skip_empty_ends_and_look_radiological(tmp_path):
    volume = read_nifti(save(tmp_path, head_volume()))
    assert volume.axis == 2 and volume.codes == ("R", "A", "S") and volume.count == 24
    numbers = [n for n, _ in volume.slices]
    assert 1 not in numbers and 2 not in numbers and 23 not in numbers and 24 not in numbers
    assert numbers == sorted(numbers) and volume.skipped == 24 - len(numbers) >= 4
    for _, rgb in volume.slices:
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        assert marker_quadrant(rgb[:, :, 0]) == ("top", "left")  # anterior up, patient's right on the left


def test_the_same_head_in_lps_or_permuted_axes_gives_the_same_slices(tmp_path):
    ras = read_nifti(save(tmp_path, head_volume(), name="ras.nii"))
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = read_nifti(save(tmp_path, head_volume()[::-1, ::-1, :].copy(), lps_affine, "lps.nii.gz"))
    assert lps.codes == ("L", "P", "S") and lps.axis == 2
    # array axes (S, R, A): the axial axis is 0
    permuted_affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    permuted = read_nifti(save(tmp_path, head_volume().transpose(2, 0, 1).copy(), permuted_affine, "sra.nii.gz"))
    assert permuted.codes == ("S", "R", "A") and permuted.axis == 0
    # a volume stored inferior-first numbers its slices the other way round, same images
    flipped = read_nifti(save(tmp_path, head_volume()[:, :, ::-1].copy(), np.diag([1.0, 1.0, -1.0, 1.0]), "rai.nii"))
    assert flipped.axis == 2 and flipped.codes == ("R", "A", "I")
    for other in (lps, permuted):
        assert [n for n, _ in other.slices] == [n for n, _ in ras.slices]
        for (_, a), (_, b) in zip(ras.slices, other.slices):
            np.testing.assert_array_equal(a, b)
    assert [25 - n for n, _ in flipped.slices][::-1] == [n for n, _ in ras.slices]
    np.testing.assert_array_equal(flipped.slices[-1][1], ras.slices[0][1])


def test_an_explicit_axis_overrides_the_orientation(tmp_path):
    path = save(tmp_path, head_volume())
    sagittal = read_nifti(path, axis=0)
    assert sagittal.axis == 0 and sagittal.count == 64
    _, rgb = sagittal.slices[len(sagittal.slices) // 2]
    assert rgb.shape == (24, 64, 3)  # superior-inferior rows, anterior-posterior columns
    with pytest.raises(ImageError, match="axis must be 0, 1 or 2"):
        read_nifti(path, axis=3)


def test_window_ignores_a_few_hot_voxels(tmp_path):
    vol = head_volume(blob=False)
    vol[30, 30, 12] = vol[31, 30, 12] = 1e6  # two extreme voxels
    volume = read_nifti(save(tmp_path, vol))
    _, rgb = volume.slices[len(volume.slices) // 2]
    head = rgb[:, :, 0][rgb[:, :, 0] > 0]
    assert np.median(head) > 60  # min-max scaling would put the head near 0
    assert rgb.max() == 255


def test_min_brain_and_a_chosen_slice(tmp_path):
    path = save(tmp_path, head_volume())
    assert len(read_nifti(path, min_brain=0).slices) == 20  # every slice with any head voxel
    assert len(read_nifti(path, min_brain=0.9).slices) < len(read_nifti(path).slices)
    only = read_nifti(path, frame=1)  # an empty slice asked for by number is still given
    assert [n for n, _ in only.slices] == [1]
    with pytest.raises(ImageError, match="slice 25 is out of range"):
        read_nifti(path, frame=25)


def test_4d_series_needs_a_volume_and_a_single_volume_series_is_3d(tmp_path):
    series = np.stack([head_volume(), head_volume(blob=False)], axis=3)
    path = save(tmp_path, series, name="series.nii.gz")
    with pytest.raises(ImageError, match="4-D series of 2 volumes") as info:
        read_nifti(path)
    assert "--volume" in info.value.hint
    first, second = read_nifti(path, volume=1), read_nifti(path, volume=2)
    assert first.count == second.count == 24
    assert not np.array_equal(first.slices[10][1], second.slices[10][1])
    with pytest.raises(ImageError, match="volume 3 is out of range"):
        read_nifti(path, volume=3)
    single = read_nifti(save(tmp_path, head_volume()[..., None], name="one.nii"))
    assert single.count == 24


@pytest.mark.parametrize("shape, message", [
    ((64, 64), "2-D image"),
    ((8, 8, 4, 2, 2), "5-D array"),
    ((4, 4, 4), "too small"),
])
def test_bad_shapes_are_refused(tmp_path, shape, message):
    path = save(tmp_path, np.ones(shape, dtype=np.float32), name="bad.nii")
    with pytest.raises(ImageError, match=message) as info:
        read_nifti(path)
    assert info.value.hint and str(path) in info.value.message


def test_an_absurd_size_is_refused_from_the_header_alone(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((5000, 5000, 10))
    header.set_data_dtype(np.uint8)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 100)  # no voxels at all
    with pytest.raises(ImageError, match="too large to read safely"):
        read_nifti(path)


def test_corrupt_truncated_empty_and_blank_volumes(tmp_path):
    good = save(tmp_path, head_volume(), name="good.nii")
    data = good.read_bytes()
    cases = {
        "noise.nii.gz": b"\x1f\x8b" + bytes(range(200)),
        "text.nii": b"not a volume at all" * 40,
        "truncated.nii": data[: len(data) // 2],
        "truncated.nii.gz": gzip.compress(data)[: len(gzip.compress(data)) // 2],
        "empty.nii": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError) as info:
            read_nifti(tmp_path / name)
        assert name in info.value.message and info.value.hint, name
    with pytest.raises(ImageError, match="no such file"):
        read_nifti(tmp_path / "missing.nii")
    with pytest.raises(ImageError, match="holds no brain"):
        read_nifti(save(tmp_path, np.zeros(SHAPE, dtype=np.float32), name="blank.nii"))


def test_no_orientation_needs_an_axis(tmp_path):
    path = save(tmp_path, head_volume(), None, name="noaffine.nii")  # qform and sform codes 0: unknown
    with pytest.raises(ImageError, match="does not say which axis is axial") as info:
        read_nifti(path)
    assert "--axis" in info.value.hint
    assert read_nifti(path, axis=2).count == 24


def test_nan_voxels_and_nifti2(tmp_path):
    vol = head_volume()
    vol[0:5, 0:5, :] = np.nan
    volume = read_nifti(save(tmp_path, vol, name="v2.nii", kind=nib.Nifti2Image))
    assert volume.axis == 2 and len(volume.slices) >= 16


def test_iter_frames_and_load_frames_treat_slices_as_frames(tmp_path):
    path = save(tmp_path, head_volume())
    frames = list(iter_frames(path))
    listed, extra = load_frames(path)
    assert [n for n, _ in frames] == [n for n, _ in listed] and extra == {"axis": 2, "slices": 24}
    assert [n for n, _ in iter_frames(path, frame=12)] == [12]
    assert len(list(iter_frames(path, axis=1))) > 0 and load_frames(path, axis=1)[1]["slices"] == 64


def test_volumes_from_bytes_told_by_content(tmp_path):
    raw = save(tmp_path, head_volume(), name="v.nii").read_bytes()
    packed = save(tmp_path, head_volume(), name="v.nii.gz").read_bytes()
    assert sniff_format(raw) == sniff_format(packed) == "NIFTI"
    assert is_nifti_bytes(raw) and is_nifti_bytes(packed)
    assert not is_nifti_bytes(gzip.compress(b"hello" * 100)) and not is_nifti_bytes(b"\x1f\x8b junk")
    from_file = read_nifti(tmp_path / "v.nii.gz")
    for data in (raw, packed):
        volume = read_nifti_bytes(data, "upload")
        assert [n for n, _ in volume.slices] == [n for n, _ in from_file.slices]
    with pytest.raises(ImageError, match="not a NIfTI"):
        read_nifti_bytes(b"\0" * 400)


def test_a_gzip_bomb_is_refused(tmp_path, monkeypatch):
    packed = save(tmp_path, head_volume(), name="v.nii.gz").read_bytes()
    monkeypatch.setattr(nifti, "MAX_DECOMPRESSED", 10_000)
    with pytest.raises(ImageError, match="unpacks to more than"):
        read_nifti_bytes(packed)
