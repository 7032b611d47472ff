import json
from pathlib import Path

import numpy as np
import pytest
import torch

from braintumor.data.classes import CLASSES
from braintumor.errors import BrainTumorError
from braintumor.training.trainer import TrainConfig, _lr_at


def test_schedule_warms_up_then_decays():
    peak, total, warm = 1e-3, 100, 10
    lrs = [_lr_at(s, total, warm, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))
    assert lrs[-1] == pytest.approx(0.01 * peak, rel=0.05)


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("label_smoothing", 1.0), ("low_res_scale", 1.1), ("low_res_scale", 0.1),
    ("low_res_fraction", 1.0), ("drop_path_rate", 1.0), ("mixup_alpha", -0.1), ("erase_prob", 1.5), ("contrast_prob", 1.5), ("degrade_prob", -0.1), ("balance_sources", 1.5),
    ("balance_sources", -0.1), ("time_limit_min", -1.0), ("train_seed", -1),
    ("relabel", {"a.png": "tumour"}), ("relabel", ["a.png"]),
])
def test_config_validation_names_the_option(field, value):
    with pytest.raises(BrainTumorError, match=field):
        TrainConfig(**{field: value})


def test_excluded_paths_under_the_data_folder_are_stored_relative_to_it(tmp_path):
    data = tmp_path / "data"
    config = TrainConfig(data=str(data), exclude=[str(data / "Training" / "glioma" / "a (1).jpg"), "Testing/x.png",
                                                  str(tmp_path / "elsewhere.png"), "Testing/x.png"])
    # relative ones as given, absolute ones under --data made relative, others kept to be reported
    assert config.exclude == sorted(["Testing/x.png", "Training/glioma/a (1).jpg", str(tmp_path / "elsewhere.png")])
    relabelled = TrainConfig(data=str(data), relabel={str(data / "Training" / "glioma" / "b.jpg"): "no_tumor", "Testing/x.png": "glioma"})
    assert relabelled.relabel == {"Testing/x.png": "glioma", "Training/glioma/b.jpg": "no_tumor"}


def test_the_training_seed_changes_the_weights_and_keeps_the_split(tiny_tree, tmp_path):
    from safetensors.numpy import load_file

    from braintumor.training.trainer import train

    def run(name, **seeds):
        out = train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / name), protocol="dedup", epochs=1, image_size=32,
                                batch_size=8, time_limit_min=0, progress=False, **seeds))
        return json.loads((out / "split.json").read_text()), load_file(out / "model.safetensors")

    split, weights = run("seed", seed=1)
    same_split, same_weights = run("default", seed=1, train_seed=1)  # the default training seed is --seed
    other_split, other_weights = run("other", seed=1, train_seed=7)
    assert same_split == split == other_split
    assert TrainConfig(seed=1, train_seed=1).train_seed is None and TrainConfig(seed=1, train_seed=7).train_seed == 7
    assert all(np.array_equal(weights[k], same_weights[k]) for k in weights)
    assert not all(np.array_equal(weights[k], other_weights[k]) for k in weights)


def test_corrected_labels_are_learnt_from_and_a_test_images_correction_is_not(tiny_tree, tmp_path):
    from safetensors.numpy import load_file

    from braintumor.data.classes import canonical_class
    from braintumor.training.trainer import train

    def run(name, relabel):
        out = train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / name), protocol="dedup", seed=1, epochs=1,
                                image_size=32, batch_size=8, time_limit_min=0, progress=False, relabel=relabel))
        network = {k: v for k, v in load_file(out / "model.safetensors").items() if not k.startswith("extra:")}
        return json.loads((out / "split.json").read_text()), network  # (not the class means fitted after training)

    def corrected(paths):  # each image to the class after its folder's
        return {Path(p).relative_to(tiny_tree).as_posix(): CLASSES[(CLASSES.index(canonical_class(Path(p).parent.name)) + 1) % 4]
                for p in paths}

    split, weights = run("plain", {})
    test_split, test_weights = run("test", corrected(split["test"][:2]))
    assert test_split["relabelled"] == {} and all(np.array_equal(weights[k], test_weights[k]) for k in weights)
    fixes = corrected(split["train"][:4] + split["val"][:1])
    train_split, train_weights = run("train", fixes)
    assert train_split["relabelled"] == {str(tiny_tree / p): c for p, c in fixes.items()}
    assert {k: train_split[k] for k in ("train", "val", "test")} == {k: split[k] for k in ("train", "val", "test")}
    assert not all(np.array_equal(weights[k], train_weights[k]) for k in weights)


def test_a_correction_that_leaves_a_copy_with_the_old_label_is_warned_about(tiny_tree, tmp_path, capsys):
    import shutil

    from braintumor.training.trainer import train

    folder = tiny_tree / "Training" / "glioma_tumor"
    for image in sorted(folder.glob("*.jpg")):  # every image twice: six pairs, most in the training part
        shutil.copy(image, folder / f"copy of {image.name}")
    relabel = {f"Training/glioma_tumor/{image.name}": "meningioma" for image in sorted(folder.glob("img*.jpg"))}
    train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), protocol="dedup", seed=1, epochs=1, image_size=32,
                      batch_size=8, time_limit_min=0, progress=False, relabel=relabel))
    err = capsys.readouterr().err
    assert "near-duplicate copies of corrected images keep their folder's label" in err and "copy of img" in err


def test_progressive_resizing_schedule():
    from braintumor.training.trainer import low_res_epochs, low_res_size

    default = TrainConfig()
    assert (low_res_size(default), low_res_epochs(default), default.image_size, default.epochs) == (128, 6, 160, 20)
    assert low_res_epochs(TrainConfig(epochs=1)) == 0  # the last epoch is always at the served size
    assert low_res_epochs(TrainConfig(epochs=2, low_res_fraction=0.9)) == 1
    assert low_res_epochs(TrainConfig(low_res_scale=1.0)) == 0 and low_res_epochs(TrainConfig(low_res_fraction=0)) == 0


def test_frozen_early_layers_keep_their_weights_and_ema_state_resumes(tiny_tree, tmp_path):
    # with layer-wise learning-rate decay on top, which must leave the frozen layers out
    import torch

    from braintumor.model.checkpoint import load_checkpoint
    from braintumor.model.factory import create_model
    from braintumor.training.trainer import train

    def run(epochs, resume=False):
        config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=epochs, image_size=32, batch_size=8,
                             freeze_blocks=2, ema_decay=0.9, layer_decay=0.8, patience=5, progress=False, resume=resume)
        return train(config)

    out = run(1)
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert "ema" in state
    groups = state["optimizer"]["param_groups"]
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.8 ** (len(scales) - 1))  # one step per block
    assert len({round(g["lr"] / g["lr_scale"], 12) for g in groups}) == 1  # each group at its share of the rate
    out = run(2, resume=True)  # the optimiser state, parameter groups included, loads back
    trained, _ = load_checkpoint(out / "model.safetensors")
    start = create_model().net.state_dict()
    after = trained.net.state_dict()
    frozen = [k for k in start if k.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1."))]
    assert frozen and all(torch.equal(start[k], after[k]) for k in frozen)  # running statistics included
    assert not torch.equal(start["blocks.4.0.conv_pw.weight"], after["blocks.4.0.conv_pw.weight"])
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_parameter_groups_decay_weights_only_and_scale_the_rate_by_depth():
    from braintumor.model.factory import create_model
    from braintumor.training.trainer import _param_groups

    model = create_model(pretrained=False)
    names = {id(p): n for n, p in model.net.named_parameters()}
    plain = _param_groups(model, 0.05, 1.0)
    assert [g["weight_decay"] for g in plain] == [0.05, 0.0] and all(p.ndim > 1 for p in plain[0]["params"])
    layered = _param_groups(model, 0.05, 0.5)
    scale = {names[id(p)]: g["lr_scale"] for g in layered for p in g["params"]}
    assert len(scale) == len(names)  # every parameter once
    assert scale["classifier.weight"] == 1.0 > scale["blocks.6.0.conv_pw.weight"] > scale["blocks.0.0.conv_dw.weight"] > scale["conv_stem.weight"]
    assert all(g["weight_decay"] == (0.0 if g["params"][0].ndim <= 1 else 0.05) for g in layered)


def test_the_next_epoch_must_fit_with_the_posthoc_fits():
    from braintumor.training.trainer import POSTHOC_EPOCHS, next_epoch_fits

    # 60-s epochs at the served size: after 10 min, the next ends at 11 min, the fits 30 s later.
    budget_s = 600 + 60 + POSTHOC_EPOCHS * 60
    assert next_epoch_fits(600, 60, 160, 160, 160, budget_s / 60)
    assert not next_epoch_fits(600.1, 60, 160, 160, 160, budget_s / 60)
    # From 128 to 160 px, an epoch is taken to cost (160/128)^2 = 1.5625 times as much, and so are the fits.
    grown = 60 * 1.5625
    assert next_epoch_fits(600, 60, 128, 160, 160, (600 + grown * (1 + POSTHOC_EPOCHS)) / 60)
    assert not next_epoch_fits(600, 60, 128, 160, 160, (600 + grown * (1 + POSTHOC_EPOCHS) - 1) / 60)
    # Epochs of a third of the training images (group sampling): the fits cost three times as many epochs.
    assert next_epoch_fits(600, 60, 160, 160, 160, (600 + 60 + 3 * POSTHOC_EPOCHS * 60) / 60, 3 * POSTHOC_EPOCHS)
    assert not next_epoch_fits(600, 60, 160, 160, 160, (600 + 60 + 3 * POSTHOC_EPOCHS * 60 - 1) / 60, 3 * POSTHOC_EPOCHS)


def test_the_time_limit_stops_the_run_before_an_epoch_that_would_not_fit(tiny_tree, tmp_path, monkeypatch):
    import braintumor.training.trainer as train_module

    asked = []

    def too_late(elapsed_s, epoch_s, size, next_size, image_size, limit_min, posthoc_epochs):
        asked.append((elapsed_s, epoch_s, size, next_size, image_size, limit_min))
        assert posthoc_epochs == train_module.POSTHOC_EPOCHS  # every training image each epoch
        return len(asked) < 2  # the second epoch fits, the third would not

    monkeypatch.setattr(train_module, "next_epoch_fits", too_late)
    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=4, image_size=48, low_res_scale=2 / 3,
                         low_res_fraction=0.25, batch_size=8, patience=5, time_limit_min=3.0, progress=False)
    out = train_module.train(config)
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    (elapsed, epoch_s, size, next_size, served, limit), second = asked
    assert 0 < epoch_s <= elapsed and (size, next_size, served, limit) == (32, 48, 48, 3.0)
    assert second[2:4] == (48, 48) and second[0] > elapsed
    # The recorded time counts from the run's start, decoding included, so it covers the epochs.
    assert json.loads((out / "model.json").read_text())["metrics"]["train_minutes"] * 60 >= second[0] - 0.6


def test_no_time_limit_runs_every_epoch(tiny_tree, tmp_path, monkeypatch):
    import braintumor.training.trainer as train_module

    monkeypatch.setattr(train_module, "next_epoch_fits", lambda *a: pytest.fail("no limit was set"))
    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=2, image_size=32, batch_size=8,
                         patience=5, time_limit_min=0, progress=False)
    out = train_module.train(config)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_progressive_resizing_trains_small_then_at_the_served_size(tiny_tree, tmp_path, monkeypatch):
    import braintumor.training.trainer as train_module

    sizes = []
    real_augment = train_module.augment

    def spy(x, generator):
        sizes.append(x.shape[-1])
        return real_augment(x, generator)

    monkeypatch.setattr(train_module, "augment", spy)
    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=2, image_size=48, low_res_scale=2 / 3,
                         low_res_fraction=0.5, batch_size=8, patience=5, progress=False)
    out = train_module.train(config)
    steps = len(sizes) // 2
    assert sizes == [32] * steps + [48] * steps
    assert json.loads((out / "model.json").read_text())["preprocess"]["image_size"] == 48


@pytest.mark.parametrize("function, option, value", [("mixup", "mixup_alpha", 0.3), ("erase", "erase_prob", 0.5), ("remap_contrast", "contrast_prob", 0.5),
                                                      ("degrade", "degrade_prob", 0.5)])
def test_an_optional_augmentation_reaches_every_training_batch_and_only_when_asked(
    function, option, value, tiny_tree, tmp_path, monkeypatch
):
    import braintumor.training.trainer as train_module

    calls = []
    real = getattr(train_module, function)

    def spy(x, setting, generator):
        calls.append(setting)
        return real(x, setting, generator)

    monkeypatch.setattr(train_module, function, spy)
    for setting in (0.0, value):
        config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / f"run{setting}"), epochs=1, image_size=32, batch_size=8,
                             patience=5, progress=False, **{option: setting})
        out = train_module.train(config)
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        assert record["train_loss"] > 0 and record["train_loss"] == record["train_loss"]  # finite, not NaN
        if setting == 0:
            assert calls == []
    assert calls and set(calls) == {value}
    assert json.loads((out / "model.json").read_text())["train_config"][option] == value


def test_source_weights_balance_the_top_level_folders():
    import torch

    from braintumor.training.trainer import _source_weights

    sources = ["Training"] * 300 + ["Testing"] * 30
    equal = _source_weights(sources, 1.0)
    assert equal[:300].sum() == pytest.approx(equal[300:].sum())  # each source drawn equally often
    half = _source_weights(sources, 0.5)
    assert half[300] / half[0] == pytest.approx(10 ** 0.5)  # a Testing image sqrt(300 / 30) times as often
    draws = torch.multinomial(half, 100_000, True, generator=torch.Generator().manual_seed(0))
    share = float((draws >= 300).float().mean())
    assert share == pytest.approx(30 * 10 ** 0.5 / (300 + 30 * 10 ** 0.5), abs=0.01)  # about 24%, not 9%
    assert _source_weights(sources, 0.0) is None and _source_weights(["Training"] * 5, 1.0) is None


def test_balanced_sources_reach_the_training_loop(tiny_tree, tmp_path, monkeypatch):
    import braintumor.training.trainer as train_module

    seen = []
    real = train_module._source_weights

    def spy(sources, power):
        seen.append((list(sources), power))
        return real(sources, power)

    monkeypatch.setattr(train_module, "_source_weights", spy)
    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=1, image_size=32, batch_size=8, patience=5,
                         progress=False, balance_sources=1.0)
    out = train_module.train(config)
    (sources, power), = seen
    trained_on = json.loads((out / "split.json").read_text())["train"]
    assert power == 1.0 and len(sources) == len(trained_on) and set(sources) == {"Training", "Testing"}
    assert sources == [p.split("/")[-3] for p in trained_on]  # each image's own top-level folder
    assert json.loads((out / "model.json").read_text())["train_config"]["balance_sources"] == 1.0


def test_an_interrupt_python_swallowed_is_raised_again_at_the_next_batch():
    import os
    import signal

    from braintumor.training.runfolder import _remembering_interrupts

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a plain `python`
    try:
        with _remembering_interrupts() as interrupts:
            interrupts.check()  # nothing pending: no error
            try:
                os.kill(os.getpid(), signal.SIGINT)
                signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a point where the pending handler runs
            except KeyboardInterrupt:
                pass  # swallowed, as in a finalizer
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
        assert signal.signal(signal.SIGINT, signal.default_int_handler) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, before)


def test_one_per_group_draws_every_group_once_and_members_evenly():
    from braintumor.training.trainer import one_per_group

    groups = np.array([7, 7, 7, 7, 3, 5, 5, 9])  # a group of 4, two singletons, a pair
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(len(groups))
    for _ in range(4000):
        chosen = one_per_group(groups, generator)
        assert sorted(groups[chosen]) == [3, 5, 7, 9]  # every group exactly once
        counts[chosen] += 1
    assert counts[4] == counts[7] == 4000  # singletons every epoch
    assert counts[:4] / 4000 == pytest.approx([0.25] * 4, abs=0.03)  # members of a group alike
    assert counts[5:7] / 4000 == pytest.approx([0.5, 0.5], abs=0.03)
    first = [tuple(groups[one_per_group(groups, torch.Generator().manual_seed(s))]) for s in range(20)]
    assert len(set(first)) > 1  # the order is shuffled too
    again = one_per_group(groups, torch.Generator().manual_seed(3))
    assert list(again) == list(one_per_group(groups, torch.Generator().manual_seed(3)))  # seeded


def test_group_sampling_trains_one_copy_of_each_group_per_epoch(tiny_tree, tmp_path, monkeypatch):
    import shutil

    import braintumor.training.trainer as train_module

    # Three exact copies of one glioma image: one group, however the split falls.
    source = tiny_tree / "Training" / "glioma_tumor" / "img (0).jpg"
    for i in range(3):
        shutil.copy(source, source.with_name(f"copy ({i}).jpg"))
    epochs = []
    real = train_module.one_per_group

    def spy(groups, generator):
        chosen = real(groups, generator)
        epochs.append((np.asarray(groups), chosen))
        return chosen

    monkeypatch.setattr(train_module, "one_per_group", spy)
    budgets = []
    monkeypatch.setattr(train_module, "next_epoch_fits", lambda *args: budgets.append(args[-1]) or True)
    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), protocol="original", epochs=2, image_size=32,
                         batch_size=8, patience=5, progress=False, sample_groups=True, time_limit_min=60.0)
    out = train_module.train(config)
    trained_on = json.loads((out / "split.json").read_text())["train"]
    assert len(epochs) == 2
    for groups, chosen in epochs:
        assert len(groups) == len(trained_on)
        names = {"img (0).jpg", "copy (0).jpg", "copy (1).jpg", "copy (2).jpg"}
        copies = [i for i, p in enumerate(trained_on)
                  if Path(p).name in names and Path(p).parent.name == "glioma_tumor" and Path(p).parent.parent.name == "Training"]
        assert len(copies) >= 2
        assert len(set(groups[copies])) == 1  # the copies in the training part share a group
        # (the generated slices are alike enough that a few other pairs are near duplicates too)
        assert len(chosen) == len(np.unique(groups)) <= len(trained_on) - len(copies) + 1
        group = np.flatnonzero(groups == groups[copies[0]])  # the copies, and any image near enough to them
        assert len(set(chosen) & set(group)) == 1  # one member of the group trains each epoch
    # the fits after training go over every training image, not one per group: they cost more epochs
    assert budgets == [pytest.approx(train_module.POSTHOC_EPOCHS * len(trained_on) / len(np.unique(epochs[0][0])))]
    assert json.loads((out / "model.json").read_text())["train_config"]["sample_groups"] is True


def test_group_sampling_reuses_the_groups_a_dedup_split_carries(monkeypatch):
    import braintumor.training.trainer as train_module
    from braintumor.data.protocols import Split

    def regroup(*args, **kwargs):
        raise AssertionError("grouped again")

    monkeypatch.setattr("braintumor.data.duplicates.duplicate_groups", regroup)
    split = Split(train=np.array([0, 2, 3]), val=np.array([1]), test=np.array([4]), groups=np.array([5, 6, 5, 7, 8]))
    assert train_module._train_groups(None, split, progress=False).tolist() == [5, 5, 7]
    with pytest.raises(AssertionError, match="grouped again"):  # a split without groups is grouped here
        train_module._train_groups(None, Split(split.train, split.val, split.test), progress=False)


def test_group_sampling_and_source_balancing_are_exclusive():
    with pytest.raises(BrainTumorError, match="sample_groups and balance_sources"):
        TrainConfig(sample_groups=True, balance_sources=0.5)


def test_equalized_training_is_served_by_torch_and_onnx_predictors(tiny_tree, tmp_path):
    from braintumor.inference.export import export_onnx
    from braintumor.data.imageio import read_image
    from braintumor.inference.predictor import Predictor
    from braintumor.data.preprocess import Preprocess

    import braintumor.training.trainer as train_module

    config = TrainConfig(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=1, image_size=32, batch_size=8,
                         patience=5, progress=False, equalize=True)
    out = train_module.train(config)
    assert json.loads((out / "model.json").read_text())["preprocess"]["equalize"] is True
    image = next(Path(tiny_tree).rglob("*.jpg"))
    equalized = Preprocess(image_size=32, equalize=True)(read_image(image))
    assert not np.array_equal(equalized, Preprocess(image_size=32)(read_image(image)))
    for model in (out / "model.safetensors", export_onnx(out / "model.safetensors", tmp_path / "model.onnx")):
        [(_, served)], _ = Predictor(model, runtime="onnx")._load(image, None)
        np.testing.assert_array_equal(served, equalized)


def test_the_linear_probe_sets_the_head_to_a_fitted_logistic_regression():
    from types import SimpleNamespace

    from synthetic import tumor_slice

    from braintumor.model.factory import to_float
    from braintumor.model.factory import create_model
    from braintumor.data.preprocess import Preprocess
    from braintumor.training.probe import fit_linear_head, pooled_features

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 4
    images = np.stack([tumor_slice(int(label), rng, 64) for label in labels])
    split = SimpleNamespace(train=np.arange(60), val=np.arange(60, 80))
    model = create_model("test_efficientnet", 4, Preprocess(image_size=64), pretrained=False)
    backbone = {k: v.clone() for k, v in model.net.state_dict().items() if "classifier" not in k}
    features = pooled_features(model, images[split.train], 64, bf16=False)

    def train_loss() -> float:
        with torch.no_grad():
            logits = model.net.get_classifier()(torch.from_numpy(features))
        return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels[split.train])))

    before = train_loss()
    accuracy = fit_linear_head(model, images, labels, split, size=64, bf16=False)
    assert train_loss() < before  # the random head replaced by one fitted to these features
    assert all(torch.equal(v, backbone[k]) for k, v in model.net.state_dict().items() if k in backbone)
    model.eval()
    with torch.no_grad():
        predicted = model(to_float(torch.from_numpy(images[split.val]))).argmax(1).numpy()
    assert accuracy == pytest.approx(float((predicted == labels[split.val]).mean()))


def test_training_with_the_linear_probe_fits_it_once_and_not_again_on_resume(tiny_tree, tmp_path, monkeypatch):
    import braintumor.training.trainer as train_module

    calls = []
    real = train_module.fit_linear_head
    monkeypatch.setattr(train_module, "fit_linear_head", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    config = dict(data=str(tiny_tree), out=str(tmp_path / "run"), epochs=2, image_size=32, batch_size=8, patience=5,
                  progress=False, probe_head=True)
    train_module.train(TrainConfig(**config, low_res_scale=0.75))
    assert calls == [24]  # fitted at the first epoch's size (progressive resizing: 24 px)
    out = train_module.train(TrainConfig(**{**config, "epochs": 3}, low_res_scale=0.75, resume=True))
    assert calls == [24]
    assert json.loads((out / "model.json").read_text())["train_config"]["probe_head"] is True


def test_sources_of_pooled_collections_are_named_by_collection_and_folder(two_collections):
    from braintumor.data.dataset import scan
    from braintumor.training.trainer import source_names

    first, second, _ = two_collections
    pooled = scan([first, second])
    names = set(source_names(pooled, range(len(pooled))))
    assert names == {"first/Training", "first/Testing", "second"}
    assert set(source_names(scan(first), range(4))) <= {"Training", "Testing"}
