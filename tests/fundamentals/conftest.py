"""Fixtures for the fundamentals tests: a PyTorch reference check and a tiny synthetic MRI tree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from braintumor.data.classes import CLASSES
from braintumor.fundamentals.autograd import Tensor
from braintumor.fundamentals.gradcheck import gradcheck, relative_error

TOL = 1e-6  # the target for every gradient check


@pytest.fixture
def check_op():
    """``check_op(ours, theirs, inputs)``: forward values and gradients of `ours` (on Tensors)
    against `theirs` (on float64 torch tensors), and against central differences."""
    torch = pytest.importorskip("torch")

    def check(ours, theirs, inputs, fd: bool = True) -> None:
        inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
        tensors = [Tensor(x.copy(), requires_grad=True) for x in inputs]
        refs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
        out, ref = ours(*tensors), theirs(*refs)
        assert out.shape == tuple(ref.shape)
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        weights = np.random.default_rng(1).standard_normal(out.shape)
        out.backward(weights)
        ref.backward(torch.tensor(weights))
        for t, r in zip(tensors, refs):
            expected = r.grad.numpy() if r.grad is not None else np.zeros_like(t.data)
            got = t.grad if t.grad is not None else np.zeros_like(t.data)
            assert relative_error(got, expected) <= TOL, f"gradient differs from torch: {relative_error(got, expected):.2e}"
        if fd:
            ok, errors = gradcheck(ours, inputs, tol=TOL)
            assert ok, f"finite-difference relative errors {errors}"

    return check


def _synthetic_slice(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A noisy gray 'head' disk with a bright square at a class-dependent height.

    Only the height carries the class, so horizontal flips (the CNN's augmentation) keep it.
    """
    yy, xx = np.mgrid[:size, :size]
    image = 60.0 * ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2)
    y0 = 3 + 7 * label + rng.integers(0, 3)
    x0 = rng.integers(8, size - 13)
    image[y0 : y0 + 5, x0 : x0 + 5] = 220.0
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def mri_tree(tmp_path_factory):
    """An ImageFolder tree of 4 classes x 20 synthetic 32x32 slices (the real data is never read)."""
    root = tmp_path_factory.mktemp("mri")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir()
        for i in range(20):
            Image.fromarray(_synthetic_slice(label, rng)).convert("RGB").save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Keep the decoded-image cache out of the user's home."""
    monkeypatch.setenv("BRAINTUMOR_CACHE", str(tmp_path / "cache"))
