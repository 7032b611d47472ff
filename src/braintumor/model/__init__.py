"""The model: the network factory, checkpoints (weights plus the configuration that goes with
them), and the test-time mirrored view."""
