"""Metrics: bootstrap intervals and paired comparisons, calibration (ECE, temperature), figures.
NumPy and scikit-learn only, shared by training, inference and evaluation."""
