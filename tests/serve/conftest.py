"""Fixtures of the server's tests: the tiny test model loaded once, with its ONNX graph cached."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def serve_cache(tmp_path_factory):
    """A cache folder holding the tiny model's ONNX graph, shared by the server tests (and by
    the `braintumor serve` processes they start, through BRAINTUMOR_CACHE)."""
    return tmp_path_factory.mktemp("serve_cache")


@pytest.fixture(scope="session")
def tiny_predictor(tiny_checkpoint, serve_cache):
    """`Predictor` of the tiny trained checkpoint (onnxruntime, one thread)."""
    from braintumor.inference import Predictor

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINTUMOR_CACHE", str(serve_cache))
        return Predictor(tiny_checkpoint, threads=1)
