"""`--device`: picking where the network runs, and falling back cleanly on a machine without the
device asked for (these tests run on CPUs; the GPU code paths are exercised by
benchmarks/train_gpu.py when a GPU is at hand)."""

import json

import pytest
import torch

from braintumor.cli import main
from braintumor.errors import BrainTumorError
from braintumor.model.device import autocast_dtype, grad_scaler, resolve_device
from braintumor.options import RULES

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a CUDA GPU")


def test_device_names_are_checked_when_given_and_resolved_when_used():
    rule = RULES["device"]
    assert all(rule.accepts(v) for v in ("auto", "cpu", "cuda", "cuda:1", "MPS", " cuda:0 "))
    assert not any(rule.accepts(v) for v in ("gpu", "cuda:", "cuda:x", "", "nan", "-1", 3))
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BrainTumorError, match="not a device|runs on cpu, cuda or mps"):
        resolve_device("xla")


@needs_no_gpu
def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_one_clear_error():
    assert resolve_device("auto").type in ("cpu", "mps")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(BrainTumorError, match="PyTorch sees no CUDA GPU") as caught:
            resolve_device(name)
        assert "--device cpu" in caught.value.hint


def test_mixed_precision_on_a_cpu_is_bfloat16_where_it_has_the_instructions_and_never_scaled():
    from braintumor.model.device import cpu_has_bfloat16

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, mixed=True) == (torch.bfloat16 if cpu_has_bfloat16() else None)
    assert autocast_dtype(cpu, mixed=False) is None
    assert not grad_scaler(cpu, torch.bfloat16).is_enabled()


@needs_no_gpu
def test_train_on_a_missing_gpu_fails_before_writing_anything(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "-d", str(tiny_tree), "-o", str(out), "--device", "cuda", "--epochs", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no CUDA GPU" in err and "Traceback" not in err
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())


@needs_no_gpu
def test_predict_says_which_runtime_runs_a_gpu_request(tiny_checkpoint, tiny_tree, capsys):
    image = next((tiny_tree / "Testing").rglob("*.jpg"))
    # onnxruntime without its CUDA provider: the CPU one, and a note that says so
    assert main(["predict", str(image), "-m", str(tiny_checkpoint), "--device", "cuda", "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert "running on the CPU" in captured.err and json.loads(captured.out)[0]["label"]
    # PyTorch has no GPU to run on: one clear error
    assert main(["predict", str(image), "-m", str(tiny_checkpoint), "--device", "cuda", "--runtime", "torch", "-q"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_device_cpu_trains_exactly_as_before(tiny_tree, tmp_path):
    """On a CPU, --device cpu (and auto on a machine without a GPU) is today's training, bit for bit."""
    from safetensors.numpy import load_file

    from braintumor.training import TrainConfig, train

    def weights(name, **kwargs):
        out = train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / name), epochs=1, image_size=32, batch_size=8,
                                progress=False, **kwargs))
        return load_file(out / "model.safetensors")

    cpu, auto = weights("cpu", device="cpu"), weights("auto")
    assert TrainConfig(device=" CPU ").device == "cpu"
    if resolve_device("auto").type == "cpu":
        assert all((cpu[k] == auto[k]).all() for k in cpu)
    with pytest.raises(BrainTumorError, match="device"):
        TrainConfig(device="gpu")
