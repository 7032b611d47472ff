"""Int8 export: the quantized graph runs integer convolutions, gives the float graph's answers on
images like its calibration images, and carries a threshold and validation figures of its own."""

import json

import numpy as np
import onnx
import pytest

from braintumor.model.checkpoint import load_checkpoint
from braintumor.cli import main
from braintumor.errors import BrainTumorError, DataError
from braintumor.inference.export import onnx_bytes
from braintumor.inference.runtime import OnnxRuntime
from braintumor.inference.predictor import Predictor
from braintumor.inference.quantize import _calibration_rows, quantize_checkpoint, quantize_graph


def _slices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from synthetic import tumor_slice

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    return np.stack([tumor_slice(int(label), rng, 128) for label in labels]), labels


def test_the_quantized_graph_runs_int8_convolutions_and_keeps_the_float_answers(tiny_checkpoint):
    model, info = load_checkpoint(tiny_checkpoint)
    float_graph = onnx_bytes(model, info)
    calibration, _ = _slices(32, seed=1)
    int8_graph = quantize_graph(float_graph, calibration)

    ops = [node.op_type for node in onnx.load_from_string(int8_graph).graph.node]
    assert ops.count("QuantizeLinear") > 10 and "Conv" in ops  # QDQ form: onnxruntime fuses it into QLinearConv
    images, labels = _slices(40, seed=2)  # images the calibration did not see
    (p32, s32), (p8, s8) = (OnnxRuntime(g, threads=1).run(images) for g in (float_graph, int8_graph))
    assert (p32.argmax(1) == labels).mean() == 1.0  # the tiny model knows these images
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.95
    assert np.abs(p8 - p32).mean() < 0.05
    # quantization noise moves the OOD scores (hence a threshold of the int8 graph's own), but the
    # int8 scores still tell noise from slices
    noise = np.random.default_rng(3).integers(0, 256, (8, 128, 128, 3), dtype=np.uint8)
    noise_scores = OnnxRuntime(int8_graph, threads=1).run(noise)[1]
    assert noise_scores.min() > s8.max()
    assert OnnxRuntime(int8_graph).info.classes == info.classes  # the metadata travels
    with pytest.raises(BrainTumorError, match="calibration_images is empty"):
        quantize_graph(float_graph, calibration[:0])


def test_calibration_rows_are_a_stratified_subset():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    rows = np.arange(100)
    picked = _calibration_rows(labels, rows, 20)
    assert len(set(picked)) == len(picked) and set(picked) <= set(rows)
    assert [int((labels[picked] == c).sum()) for c in range(3)] == [12, 6, 2]
    assert list(_calibration_rows(labels, rows[:15], 20)) == list(range(15))  # fewer rows than asked: all


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from synthetic import make_tree

    from braintumor.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("int8")
    tree = make_tree(root / "data", per_class=8)
    return train(TrainConfig(data=str(tree), out=str(root / "run"), backbone="test_efficientnet", pretrained=False,
                             image_size=48, epochs=2, batch_size=16, bf16=False, progress=False)), tree


def test_quantize_checkpoint_sets_its_own_ood_threshold_and_records_its_validation_figures(tiny_run, tmp_path):
    run, tree = tiny_run
    out, report = quantize_checkpoint(run / "model.safetensors", tmp_path / "m-int8.onnx", progress=False)
    _, info = load_checkpoint(run / "model.safetensors")
    runtime = OnnxRuntime(out)
    stored = runtime.info.extra
    assert stored["int8"] == report and report["images"] > 0 and report["calibration_images"] > 0
    assert stored["ood"]["float32_threshold"] == info.extra["ood"]["threshold"]
    assert runtime.threshold == report["ood_threshold"]
    for key in ("float32", "int8"):
        assert 0 <= report[key]["accuracy"] <= 1 and report[key]["nll"] > 0
    assert 0 <= report["same_class"] <= 1 and report["max_probability_difference"] >= report["mean_probability_difference"]

    # the threshold accepts the checkpoint's share of its validation images under the int8 graph
    from braintumor.data.dataset import load_images, scan
    from braintumor.data.protocols import run_split

    images, found = load_images(scan(tree), info.preprocess, progress=False)
    val = images[run_split(found, info.train_config).val]
    assert len(val) == report["images"]
    scores = runtime.run(val)[1]
    assert (scores <= runtime.threshold).mean() >= info.extra["ood"]["accept"]
    # and the file predicts like any exported model
    results = Predictor(out).predict([tree / "Testing"])
    assert len(results) == 32 and not any(r.error for r in results)


def test_export_int8_command_and_its_errors(tiny_run, tmp_path, capsys):
    run, tree = tiny_run
    model = str(run / "model.safetensors")
    out = tmp_path / "q.onnx"
    assert main(["export", model, "--int8", "--out", str(out), "--calibration", "8", "-q", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out) and printed["calibration_images"] == 8 and out.is_file()
    assert main(["export", model, "--int8", "--out", str(out), "-q"]) == 0
    assert "validation images" in capsys.readouterr().out

    assert main(["export", model, "--out", str(tmp_path / "f.onnx"), "--json"]) == 0  # float, for comparison
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path / "f.onnx")}
    assert out.stat().st_size < (tmp_path / "f.onnx").stat().st_size  # int8 weights: a smaller file

    # --data without --int8, a bad calibration count, other data than the model's: one message each
    assert main(["export", model, "--data", str(tree)]) != 0
    assert "only apply with --int8" in capsys.readouterr().err
    assert main(["export", model, "--int8", "--calibration", "0", "-q"]) != 0
    assert "--calibration: must be an integer in 1..100000" in capsys.readouterr().err
    from synthetic import make_tree

    other = make_tree(tmp_path / "other", per_class=3)
    with pytest.raises(DataError, match="not the dataset"):
        quantize_checkpoint(model, tmp_path / "x.onnx", data=other, progress=False)
    with pytest.raises(BrainTumorError, match="must end in .onnx"):
        quantize_checkpoint(model, tmp_path / "x.bin", progress=False)
