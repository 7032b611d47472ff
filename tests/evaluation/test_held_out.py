"""evaluate on a split whose test images the model trained or was validated on: refused, or with
--allow-overlap scored and labelled as no test."""

from __future__ import annotations

import json
import shutil

import pytest

from braintumor.errors import BrainTumorError
from synthetic import make_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run under ``original`` with split seed 0."""
    from braintumor.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("held_out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINTUMOR_CACHE", str(root / "cache"))
        data = make_tree(root / "data")
        out = train(TrainConfig(data=str(data), out=str(root / "run"), backbone="test_efficientnet", pretrained=False,
                                image_size=32, epochs=1, batch_size=8, threads=1, progress=False))
    return data, out


def test_the_models_own_split_is_scored_as_a_test(run):
    from braintumor.evaluation.evaluator import evaluate

    _, out = run
    metrics = evaluate(out / "model.safetensors", progress=False)
    assert "held_out" not in metrics and "overlap" not in metrics
    assert not (out / "report.md").read_text().startswith("# NOT A HELD-OUT TEST")


@pytest.mark.parametrize("protocol, seed", [(None, 1), ("official", None)], ids=["another seed", "another protocol"])
def test_a_split_overlapping_the_training_images_is_refused(run, tmp_path, protocol, seed):
    from braintumor.evaluation.evaluator import evaluate

    _, out = run
    with pytest.raises(BrainTumorError) as refused:
        evaluate(out / "model.safetensors", protocol=protocol, seed=seed, out=tmp_path / "report", progress=False)
    assert "were trained or validated on" not in refused.value.message  # (that is the labelled report's wording)
    assert "test images of the" in refused.value.message and "was trained or validated on" in refused.value.message
    assert "--allow-overlap" in refused.value.hint and "seed 0" in refused.value.hint
    assert not (tmp_path / "report" / "report.md").exists()


def test_without_split_json_the_models_split_is_recreated_from_its_config(run, tmp_path):
    from braintumor.evaluation.evaluator import evaluate

    _, out = run
    alone = tmp_path / "copied"
    alone.mkdir()
    shutil.copy(out / "model.safetensors", alone / "model.safetensors")
    with pytest.raises(BrainTumorError, match="was trained or validated on"):
        evaluate(alone / "model.safetensors", seed=1, progress=False)


def test_with_allow_overlap_the_report_and_the_json_say_it_is_no_test(run, tmp_path, capsys):
    from braintumor.cli import main

    _, out = run
    report = tmp_path / "report"
    assert main(["evaluate", str(out / "model.safetensors"), "--seed", "1", "--out", str(report), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint:" in err and "--allow-overlap" in err and "Traceback" not in err
    assert main(["evaluate", str(out / "model.safetensors"), "--seed", "1", "--out", str(report), "--allow-overlap",
                 "-q"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("NOT A HELD-OUT TEST: the model trained or was validated on ")
    first = (report / "report.md").read_text().splitlines()[0]
    assert first.startswith("# NOT A HELD-OUT TEST: the model trained or was validated on ") and "--allow-overlap" in first
    metrics = json.loads((report / "test_metrics.json").read_text())
    assert metrics["held_out"] is False and 1 <= metrics["overlap"]["seen"] <= metrics["overlap"]["test_images"]
    assert metrics["overlap_note"] in first
