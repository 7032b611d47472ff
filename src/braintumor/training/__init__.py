"""Training: the configuration (`TrainConfig`), the loop (`train`), augmentation and distillation.

``TrainConfig`` is importable without PyTorch; ``train`` loads it on first use.
"""

from braintumor.training.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str):
    if name == "train":  # imports torch: only when asked for
        from braintumor.training.trainer import train

        return train
    raise AttributeError(f"module 'braintumor.training' has no attribute {name!r}")
