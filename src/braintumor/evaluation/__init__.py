"""Evaluation: a model on a protocol's test split (`evaluate`), on another collection
(`external`), cross-validation, protocol comparison, and likely label errors."""

from braintumor.evaluation.evaluator import evaluate

__all__ = ["evaluate"]
