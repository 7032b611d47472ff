import pytest
import torch

from braintumor.model.views import MirrorView


def test_mirror_view_orientation_and_exactness():
    x = torch.rand(2, 3, 12, 12)
    torch.testing.assert_close(MirrorView().apply(x), torch.flip(x, dims=[3]))  # the plain mirror is exact
    # The sampling grid path: rotating the mirror by ±90 degrees lands on pixel centres exactly.
    quarter = MirrorView(angle=90.0).apply(x)
    options = [torch.rot90(torch.flip(x, dims=[3]), k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(quarter, o, atol=1e-5) for o in options)
    tilted = MirrorView(angle=8.0)
    assert not tilted.plain and tilted.apply(x).shape == x.shape
    torch.testing.assert_close(tilted.apply(x, tilted.grid(12)), tilted.apply(x))
    assert MirrorView.from_dict(tilted.to_dict()) == tilted and MirrorView.from_dict(None) == MirrorView()
    with pytest.raises(ValueError, match="angle"):
        MirrorView(angle=180.5)
    with pytest.raises(ValueError, match="zoom"):
        MirrorView(zoom=3.0)
