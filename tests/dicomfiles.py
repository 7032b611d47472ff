"""Small DICOM files written by the tests (pydicom), never real scans."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def _dataset(sop_class=MRImageStorage) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    return ds


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes):
    """Write `pixels` (rows x cols, or frames x rows x cols) as an uncompressed DICOM file."""
    ds = _dataset()
    ds.set_pixel_data(pixels, photometric, bits_stored=8 * pixels.itemsize)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path
