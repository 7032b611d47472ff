"""Out-of-distribution detection: the Mahalanobis score itself, its storage in checkpoints, its
fit at the end of training, and rejection of photos, blank, noise, gradient, text and
other-modality images by a tiny trained model."""

import json

import numpy as np
import pytest
from PIL import Image

from braintumor.model.checkpoint import load_checkpoint, read_info, save_checkpoint
from braintumor.errors import BrainTumorError
from braintumor.inference.ood import OODStats, auroc, fit_ood
from oodset import generated_images, ood_images
from braintumor.inference.predictor import NOT_BRAIN_MRI, Predictor


def _gaussian_classes(rng, n=400, d=8):
    labels = np.arange(n) % 2
    features = rng.normal(0, 1, (n, d)) * np.linspace(0.5, 2, d) + labels[:, None] * 4.0
    return features, labels


def test_scores_are_the_mahalanobis_distance_to_the_nearest_class():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    features, labels = _gaussian_classes(rng)
    stats = fit_ood(features, labels, features[:50])
    means = np.stack([features[labels == c].mean(0) for c in (0, 1)])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(features - means[labels]).covariance_)
    probe = rng.normal(0, 3, (5, 8))
    expected = np.sqrt(np.min([np.einsum("nd,de,ne->n", probe - m, precision, probe - m) for m in means], axis=0))
    assert np.allclose(stats.scores(probe), expected, rtol=1e-4)


def test_threshold_sits_between_the_quantile_and_the_next_score():
    from braintumor.inference.ood import threshold_at

    scores = np.array([10.0, 3.0, 1.0, 3.0, 2.0, 3.0])  # three copies at the quantile
    assert threshold_at(scores, 0.5) == pytest.approx(6.5)
    assert (scores + 1e-5 <= threshold_at(scores, 0.5)).sum() == 5  # a rounding error does not reject them
    assert 10.0 < threshold_at(scores, 1.0) < 10.1  # nothing above the quantile: just above it


def test_threshold_accepts_the_requested_share_of_validation():
    rng = np.random.default_rng(1)
    features, labels = _gaussian_classes(rng)
    val, _ = _gaussian_classes(rng, n=200)
    stats = fit_ood(features, labels, val, accept=0.98)
    assert (stats.scores(val) <= stats.threshold).mean() >= 0.98
    assert stats.val_accepted >= 0.98
    far = rng.normal(0, 1, (20, 8)) + 25
    assert (stats.scores(far) > stats.threshold).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"accept": 0.3}, "accept must be"), ({"val_features": np.zeros((0, 8))}, "val_features is empty")],
)
def test_fit_ood_validates_arguments(kwargs, message):
    rng = np.random.default_rng(2)
    features, labels = _gaussian_classes(rng)
    args = {"train_features": features, "train_labels": labels, "val_features": features, **kwargs}
    with pytest.raises(BrainTumorError, match=message):
        fit_ood(**args)


def test_statistics_travel_in_the_checkpoint_in_float32(tiny_checkpoint, tmp_path):
    model, info = load_checkpoint(tiny_checkpoint)
    stats = OODStats.load_from(info)
    assert stats is not None and stats.threshold > 0 and stats.val_accepted >= 0.99
    stage_channels = [f["num_chs"] for f in model.net.feature_info if f["reduction"] == 16][-1]
    assert info.extra["ood"]["feature_dim"] == stats.whiten.shape[0] == stage_channels
    save_checkpoint(tmp_path / "half.safetensors", model, info, half=True)
    again, _ = read_info(tmp_path / "half.safetensors")
    assert again.arrays["ood.whiten"].dtype.is_floating_point and str(again.arrays["ood.whiten"].dtype) == "torch.float32"
    assert np.array_equal(again.arrays["ood.means"].numpy(), stats.means)
    # the human-readable JSON copy holds the threshold, not the big matrices
    meta = json.loads((tmp_path / "half.json").read_text())
    assert meta["extra"]["ood"]["threshold"] == pytest.approx(stats.threshold)


def test_ood_set_covers_the_required_kinds():
    names = [name for name, _ in ood_images(size=64)]
    for kind in ("skimage-", "blank-", "noise-", "gradient-", "text-", "document-", "texture-", "chest-xray", "abdominal-ct",
                 "ultrasound", "hand-xray"):
        assert any(n.startswith(kind) for n in names), kind
    assert not any("brain" in n for n in names)
    assert all(img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 for _, img in ood_images(size=64))


def test_tiny_model_rejects_what_is_not_a_brain_slice(tiny_checkpoint, tmp_path):
    from synthetic import tumor_slice

    rng = np.random.default_rng(7)
    for i in range(20):
        Image.fromarray(tumor_slice(i % 4, rng, 128)).save(tmp_path / f"slice{i:02d}.png")
    ood_dir = tmp_path / "ood"
    ood_dir.mkdir()
    photos = [item for item in ood_images(size=128) if item[0] in {"skimage-astronaut", "skimage-camera", "skimage-coffee", "skimage-page"}]
    for name, img in photos + generated_images(size=128):
        Image.fromarray(img).save(ood_dir / f"{name}.png")
    predictor = Predictor(tiny_checkpoint)
    inside = predictor.predict(sorted(tmp_path.glob("slice*.png")))
    outside = predictor.predict([ood_dir])
    assert not any(r.error for r in inside + outside)
    assert np.mean([r.accepted for r in inside]) >= 0.9
    assert auroc([r.ood_score for r in inside], [r.ood_score for r in outside]) >= 0.95
    rejected = [r for r in outside if not r.accepted]
    assert len(rejected) >= 0.9 * len(outside)
    for r in rejected:
        assert r.label == NOT_BRAIN_MRI and "out-of-distribution score" in r.reason
        assert r.top_class in predictor.classes and abs(sum(r.probabilities.values()) - 1) < 1e-5
    for kind in ("blank-black", "noise-uniform-0", "gradient-horizontal", "text-0", "chest-xray-0", "skimage-astronaut"):
        assert any(r.path.endswith(f"{kind}.png") for r in rejected), kind


def test_training_run_fits_and_stores_the_detector(tiny_tree, tmp_path):
    from braintumor.cli import main
    from braintumor.training.trainer import TrainConfig, train

    out = train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), backbone="test_efficientnet", pretrained=False,
                            image_size=32, epochs=1, batch_size=16, bf16=False, progress=False))
    info, _ = read_info(out / "model.safetensors")
    assert info.extra["ood"]["val_accepted"] >= 0.98 and "ood.whiten" in info.arrays
    # fit-ood refits an existing run from its split.json, here into a copy
    copy = tmp_path / "run" / "refit.safetensors"
    assert main(["fit-ood", str(out / "model.safetensors"), "--out", str(copy), "--accept", "0.99", "-q", "--json"]) == 0
    refit, _ = read_info(copy)
    assert refit.extra["ood"]["accept"] == 0.99 and np.isfinite(refit.extra["ood"]["threshold"])
    # without split.json (a checkpoint moved out of its run folder) the split is re-created from
    # the stored config: the same training and validation images, so the same detector
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((out / "model.safetensors").read_bytes())
    assert main(["fit-ood", str(alone), "--in-place", "--accept", "0.99", "-q"]) == 0
    moved, _ = read_info(alone)
    assert moved.extra["ood"]["threshold"] == refit.extra["ood"]["threshold"]
    assert moved.extra["ood"]["val_accepted"] == refit.extra["ood"]["val_accepted"]


def test_fit_ood_without_split_file_or_data_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    from braintumor.cli import main

    assert main(["fit-ood", str(tiny_checkpoint)]) == 2  # never overwrites its input unasked
    assert "--in-place" in capsys.readouterr().err
    assert main(["fit-ood", str(tiny_checkpoint), "--out", str(tmp_path / "fitted.safetensors")]) != 0
    assert "records no training data" in capsys.readouterr().err


def test_detector_fitted_on_other_features_is_a_clear_error(tiny_checkpoint):
    from braintumor.model.checkpoint import read_info
    from braintumor.errors import CheckpointError
    from braintumor.inference.ood import OODStats

    info, _ = read_info(tiny_checkpoint)
    assert OODStats.load_from(info) is not None
    info.extra["ood"]["features"] = "penultimate features"
    with pytest.raises(CheckpointError, match="fit-ood"):
        OODStats.load_from(info)


def test_sequence_variants_remap_the_head_and_keep_the_background():
    from braintumor.inference.ood import sequence_variants
    from synthetic import tumor_slice

    rng = np.random.default_rng(3)
    images = np.stack([tumor_slice(i % 4, rng, 64) for i in range(6)])
    variants, rows = sequence_variants(images, copies=2, seed=5)
    assert variants.shape == (12, 64, 64, 3) and variants.dtype == np.uint8 and rows.tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert (variants[..., 0] == variants[..., 1]).all() and (variants[..., 1] == variants[..., 2]).all()  # grey
    gray = images.mean(axis=3)[rows]
    background = gray <= 0.04 * 255
    assert np.abs(variants[..., 0].astype(float) - gray)[background].max() <= 1  # black stays black
    assert (variants[..., 0][~background] >= 0.04 * 255 - 1).all()  # the head never sinks into it
    changed = np.abs(variants[..., 0].astype(float) - gray)[~background].mean()
    assert changed > 20  # grey levels really moved
    again, _ = sequence_variants(images, copies=2, seed=5)
    other, _ = sequence_variants(images, copies=2, seed=6)
    assert np.array_equal(variants, again) and not np.array_equal(variants, other)


def test_a_detector_fitted_with_variants_records_them_and_scores_such_images_closer(tiny_checkpoint):
    from braintumor.inference.ood import fit_model_ood, ood_features, sequence_variants
    from synthetic import tumor_slice

    model, info = load_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(8)
    size = info.preprocess.image_size
    train = np.stack([info.preprocess(tumor_slice(i % 4, rng, 128)) for i in range(40)])
    val = np.stack([info.preprocess(tumor_slice(i % 4, rng, 128)) for i in range(12)])
    labels = np.arange(40) % 4
    probe, _ = sequence_variants(val, copies=2, seed=99)  # other curves than the fit's
    assert probe.shape[1] == size
    scores = {}
    for variants in (0, 1):
        fit_model_ood(model, info, train, labels, val, variants=variants)
        stats = OODStats.load_from(info)
        assert info.extra["ood"]["sequence_variants"] == stats.variants == variants
        scores[variants] = stats.scores(ood_features(model, probe)) / stats.threshold
    assert np.median(scores[1]) < np.median(scores[0])
