"""Data: reading images (JPEG, PNG, BMP, TIFF, DICOM), the one preprocessing definition, labelled
datasets, duplicate detection, the evaluation protocols' splits, and downloading the public dataset."""
