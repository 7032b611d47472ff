import json

import pytest
import torch
from safetensors.torch import save_file

from braintumor.model.views import MirrorView
from braintumor.model.checkpoint import ModelInfo, load_checkpoint, read_info, save_checkpoint
from braintumor.errors import CheckpointError
from braintumor.model.factory import create_model
from braintumor.data.preprocess import Preprocess


def _info(**kw):
    return ModelInfo(classes=["glioma", "meningioma", "no_tumor", "pituitary"], backbone="tf_efficientnet_lite0",
                     preprocess=Preprocess(image_size=64), **kw)


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = create_model(pretrained=False, preprocess=Preprocess(image_size=64)).eval()
    view = MirrorView(angle=8.0)
    path = save_checkpoint(tmp_path / "m.safetensors", model, _info(temperature=1.5, metrics={"val_acc": 0.9}, tta_view=view))
    loaded, info = load_checkpoint(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert info.temperature == 1.5 and info.metrics == {"val_acc": 0.9} and info.preprocess.image_size == 64
    assert info.tta_view == view
    assert json.loads((tmp_path / "m.json").read_text())["backbone"] == "tf_efficientnet_lite0"
    assert not list(tmp_path.glob("*.tmp"))


def test_half_precision_file_is_smaller_and_close(tmp_path):
    model = create_model(pretrained=False).eval()
    full = save_checkpoint(tmp_path / "f.safetensors", model, _info())
    half = save_checkpoint(tmp_path / "h.safetensors", model, _info(), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).softmax(1), model(x).softmax(1), atol=1e-2, rtol=0)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage bytes that are not safetensors")
    with pytest.raises(CheckpointError, match="not a braintumor checkpoint"):
        read_info(tmp_path / "x.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no braintumor metadata"):
        read_info(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        read_info(tmp_path / "missing.safetensors")


def test_incompatible_version(tmp_path):
    meta = _info().to_dict()
    meta["format_version"] = 99
    save_file({"w": torch.zeros(2)}, str(tmp_path / "new.safetensors"), metadata={"braintumor": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="format version 99"):
        read_info(tmp_path / "new.safetensors")


@pytest.mark.parametrize("change", ["field", "damaged", "list", "view"])
def test_metadata_from_a_newer_or_damaged_writer_is_one_clear_error(tmp_path, change):
    meta = _info().to_dict()
    meta["preprocess"]["sharpen"] = True  # a field this version does not know
    odd_view = json.dumps({**_info().to_dict(), "tta_view": "rotated"})  # a value of another shape
    raw = {"field": json.dumps(meta), "damaged": json.dumps(meta)[:-5], "list": "[1, 2]", "view": odd_view}[change]
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"), metadata={"braintumor": raw})
    expected = {"field": "unknown checkpoint metadata.*sharpen", "damaged": "damaged", "list": "unknown checkpoint format",
                "view": "unknown checkpoint metadata"}
    with pytest.raises(CheckpointError, match=expected[change]) as caught:
        read_info(tmp_path / "m.safetensors")
    assert caught.value.hint == "retrain the model"


def test_weights_that_do_not_fit(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "bad.safetensors"), metadata={"braintumor": json.dumps(_info().to_dict())})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_metadata_without_a_tta_view_means_the_plain_mirror():
    d = _info(tta=True).to_dict()
    del d["tta_view"]  # checkpoints written before the view was configurable
    assert ModelInfo.from_dict(d).tta_view == MirrorView()
