"""The theory under the model, from scratch in NumPy (see issue 5)."""
