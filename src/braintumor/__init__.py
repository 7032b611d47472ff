"""braintumor: brain MRI slice classification (glioma, meningioma, pituitary tumor, no tumor)."""

__version__ = "0.1.0"
