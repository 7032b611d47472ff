"""Training: the configuration (`TrainConfig`), the loop (`train`), augmentation and distillation."""

from braintumor.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
