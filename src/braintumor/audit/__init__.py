"""The dataset audit: exact and near-duplicate images, label conflicts, copies in another folder,
and whether file properties alone give the class away."""

from braintumor.audit.auditor import audit

__all__ = ["audit"]
