import json

import numpy as np
import pytest
import torch

from braintumor.training.distill import distill_loss, teacher_probs
from braintumor.errors import BrainTumorError
from braintumor.training.trainer import TrainConfig, train


def test_distill_loss_against_a_hand_computed_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    soft = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    hard = torch.tensor(0.7)
    t = 2.0
    q = torch.softmax(logits / t, dim=1)
    kl = float((soft * (soft / q).log()).sum(1).mean())  # KL(teachers || student), averaged over the batch
    assert float(distill_loss(logits, soft, 0.25, t, hard)) == pytest.approx(0.75 * 0.7 + 0.25 * t**2 * kl, rel=1e-6)
    # a student that already matches the teachers pays only its share of the labels' loss
    assert float(distill_loss(logits, q, 0.4, t, hard)) == pytest.approx(0.6 * 0.7, abs=1e-6)


def test_teacher_probs_average_the_softened_distributions():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    got = teacher_probs([a, b], x, temperature=3.0)
    want = (torch.softmax(a(x) / 3.0, 1) + torch.softmax(b(x) / 3.0, 1)) / 2
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got.sum(1), torch.ones(5))


@pytest.mark.parametrize("field, value", [("distill_weight", 0.0), ("distill_weight", 1.5), ("distill_temperature", 0.0),
                                          ("teacher", "runs/a")])
def test_distillation_settings_are_validated(field, value):
    with pytest.raises(BrainTumorError, match=field):
        TrainConfig(**{field: value})


def test_a_student_learns_from_a_teacher_of_its_split_and_refuses_one_that_saw_its_test_images(tiny_tree, tmp_path):
    common = dict(data=str(tiny_tree), epochs=1, image_size=32, batch_size=8, progress=False)
    teacher = train(TrainConfig(**common, seed=0, out=str(tmp_path / "teacher")))
    plain = train(TrainConfig(**common, seed=1, out=str(tmp_path / "plain")))
    student = train(TrainConfig(**common, seed=1, out=str(tmp_path / "student"), teacher=[str(plain)], distill_weight=0.9))
    loss = [json.loads((run / "metrics.jsonl").read_text())["train_loss"] for run in (plain, student)]
    # the same data order and initialisation: only the teacher's term differs
    assert json.loads((student / "split.json").read_text()) == json.loads((plain / "split.json").read_text())
    assert not np.isclose(*loss)
    assert json.loads((student / "model.json").read_text())["train_config"]["teacher"] == [str(plain)]
    from braintumor.evaluation.evaluator import evaluate

    evaluate(student / "model.safetensors", progress=False)  # the report says where the student learnt from
    assert f"**distilled from**: {plain}" in (student / "report.md").read_text()
    # seed 0's split trained on images that seed 1's run validates or tests on
    with pytest.raises(BrainTumorError, match="validation and test images"):
        train(TrainConfig(**common, seed=1, out=str(tmp_path / "leaky"), teacher=[str(teacher)]))
    with pytest.raises(BrainTumorError, match="preprocesses images otherwise"):
        train(TrainConfig(**{**common, "image_size": 48}, seed=1, out=str(tmp_path / "sized"), teacher=[str(plain)]))
    with pytest.raises(BrainTumorError, match="not a checkpoint"):
        train(TrainConfig(**common, seed=1, out=str(tmp_path / "none"), teacher=[str(tmp_path / "missing")]))
    assert not (tmp_path / "leaky" / "model.safetensors").exists()


def test_relative_data_and_teacher_paths_are_stored_absolute_so_a_run_resumes_from_anywhere(tiny_tree, tmp_path, monkeypatch):
    from braintumor.cli import main

    common = dict(seed=1, epochs=1, image_size=32, batch_size=8, progress=False)
    plain = train(TrainConfig(data=str(tiny_tree), out=str(tmp_path / "plain"), **common))
    monkeypatch.chdir(tmp_path)
    student = train(TrainConfig(data="data", out="student", teacher=["plain"], **common))
    stored = json.loads((tmp_path / student / "model.json").read_text())["train_config"]
    assert stored["data"] == str(tiny_tree) and stored["teacher"] == [str(plain)]
    # the teacher cannot be given anew on resume (it shapes the model), so it must be found from here too
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--out", str(tmp_path / "student"), "--resume", "--epochs", "2", "--no-test", "-q"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
