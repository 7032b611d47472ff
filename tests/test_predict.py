import numpy as np
import pytest
import torch
from PIL import Image

from braintumor.checkpoint import ModelInfo, save_checkpoint
from braintumor.models import create_model
from braintumor.predict import Predictor, expand_inputs, predict_images
from braintumor.preprocess import Preprocess


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    pre = Preprocess(image_size=32)
    model = create_model(pretrained=False, preprocess=pre)
    info = ModelInfo(classes=["glioma", "meningioma", "no_tumor", "pituitary"], backbone="tf_efficientnet_lite0", preprocess=pre, tta=True)
    return save_checkpoint(tmp_path / "m.safetensors", model, info)


def test_tta_averages_image_and_mirror():
    torch.manual_seed(0)
    model = create_model(pretrained=False, drop_rate=0.0).eval()
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    plain = predict_images(model, images)
    mirrored = predict_images(model, images[:, :, ::-1].copy())
    both = predict_images(model, images, tta=True)
    logit = lambda p: np.log(p)  # noqa: E731 - log-probabilities differ from logits by a constant per row
    expected = torch.softmax(torch.tensor((logit(plain) + logit(mirrored)) / 2), 1).numpy()
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(both.sum(1), 1, atol=1e-6)


def test_predictor_files_folders_and_errors(tmp_path, checkpoint):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (40, 40), 40 * i + 30).save(folder / f"s ({i}).png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    results = Predictor(checkpoint).predict([folder, empty, tmp_path / "missing.png"], batch_size=2)
    by_path = {r.path: r for r in results}
    assert len(results) == 6
    assert by_path[str(empty)].error.startswith("folder holds no")
    assert by_path[str(tmp_path / "missing.png")].error == "no such file or folder"
    assert "not an image" in by_path[str(folder / "broken.jpg")].error
    good = [r for r in results if r.error is None]
    assert len(good) == 3 and all(r.label in r.probabilities for r in good)


def test_expand_inputs_recurses_and_skips_hidden(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "a" / "b" / "x.png")
    Image.new("L", (8, 8)).save(tmp_path / "a" / ".hidden.png")
    (tmp_path / "a" / "notes.txt").write_text("x")
    files, errors = expand_inputs([tmp_path / "a"])
    assert [f.name for f in files] == ["x.png"] and not errors
