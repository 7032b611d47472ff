"""End to end through the command line: train one short epoch on a tiny generated dataset,
then evaluate and predict; and every expected error gives one message, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from braintumor.cli import build_parser, main
from braintumor.cli.train import print_validation as _print_validation


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "braintumor", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from synthetic import make_tree

    root = tmp_path_factory.mktemp("e2e")
    data = make_tree(root / "data", per_class=8)
    out = root / "run"
    result = _run("train", "--data", data, "--out", out, "--epochs", "1", "--image-size", "32", "--batch-size", "8",
                  "--seed", "3", "--json", "-q")
    assert result.returncode == 0, result.stderr
    return data, out, json.loads(result.stdout)


def test_train_writes_run_directory(trained):
    data, out, metrics = trained
    for name in ("model.safetensors", "model.json", "last.safetensors", "last_state.pt", "metrics.jsonl", "report.md",
                 "confusion_matrix.png", "confusion_matrix.json", "curves.png", "skipped.json", "test_metrics.json"):
        assert (out / name).is_file(), name
    from braintumor.training.runfolder import RUN_FILES  # what --overwrite removes must cover all that train and evaluate write

    assert {p.name for p in out.iterdir()} <= set(RUN_FILES)
    assert metrics["n"] == 7  # ceil(10% of 64)
    assert 1 <= metrics["ci_groups"] <= metrics["n"]  # intervals resample the test images' duplicate groups
    assert 0 <= metrics["accuracy"] <= 1 and set(metrics["per_class"]) == {"glioma", "meningioma", "no_tumor", "pituitary"}
    report = (out / "report.md").read_text()
    assert "confusion_matrix.png" in report and "curves.png" in report and "Skipped files: 0" in report
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1]


def test_evaluate_recreates_the_same_test_split(trained, tmp_path):
    data, out, metrics = trained
    result = _run("evaluate", out / "model.safetensors", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["n"] == metrics["n"] and again["accuracy"] == metrics["accuracy"]
    assert (tmp_path / "report.md").is_file()


def test_evaluate_against_a_second_checkpoint_pairs_the_same_test_images(trained, tmp_path):
    data, out, metrics = trained
    model = out / "model.safetensors"
    result = _run("evaluate", model, "--against", model, "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    against = json.loads(result.stdout)["against"]
    # a model against itself: the same predictions on every image, so nothing differs in any resample
    assert against["accuracy"] == metrics["accuracy"] and against["difference"] == 0
    assert against["difference_ci"] == [0.0, 0.0] and against["only_this_right"] == against["only_other_right"] == 0
    assert "## Against" in (tmp_path / "report.md").read_text()
    missing = _run("evaluate", model, "--against", tmp_path / "missing.safetensors", "--out", tmp_path)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "missing.safetensors" in missing.stderr


def test_test_predictions_skip_hashing_only_when_asked(trained):
    # `evaluate --against` scores the second model without hashing its (identical) test images again
    from braintumor.evaluation.evaluator import predict_test_split

    _, out, metrics = trained
    hashed = predict_test_split(out / "model.safetensors", progress=False)
    plain = predict_test_split(out / "model.safetensors", progress=False, groups=False)
    assert plain.groups is None and len(hashed.groups) == len(hashed.paths) == metrics["n"]
    assert plain.paths == hashed.paths and np.array_equal(plain.probs, hashed.probs)


def test_resume_continues_after_last_epoch(trained, tmp_path):
    data, out, _ = trained
    result = _run("train", "--data", data, "--out", out, "--epochs", "2", "--image-size", "32", "--batch-size", "8",
                  "--seed", "3", "--resume", "-q")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_resume_keeps_the_runs_own_split_and_recipe(trained, tmp_path, capsys):
    data, _, _ = trained
    out = tmp_path / "run"
    listing = tmp_path / "drop.txt"
    listing.write_text("Training/glioma_tumor/img (0).jpg\n")
    first = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--image-size", "32", "--batch-size", "8",
             "--seed", "5", "--val-fraction", "0.2", "--exclude", str(listing), "--no-test", "-q"]
    assert main(first) == 0
    split = json.loads((out / "split.json").read_text())
    # only --out and --resume (and more epochs): the seed, fractions, size and exclusions come from the run
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-test", "-q"]) == 0
    assert json.loads((out / "split.json").read_text()) == split
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    from braintumor.training.runfolder import stored_config

    config = stored_config(out)
    assert config["seed"] == 5 and config["image_size"] == 32 and config["exclude"] == ["Training/glioma_tumor/img (0).jpg"]
    capsys.readouterr()
    # a setting that would change the split or the model is refused, before any work
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--seed", "6", "-q"]) != 0
    err = capsys.readouterr().err
    assert "was started with seed=5, not 6" in err and "Traceback" not in err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # a run that has trained its epochs is not trained further by a resume without more of them
    stamp = (out / "last_state.pt").stat().st_mtime_ns
    assert main(["train", "--out", str(out), "--resume", "--no-test", "-q"]) == 0
    assert (out / "last_state.pt").stat().st_mtime_ns == stamp and "has finished training" in capsys.readouterr().err


def test_predict_table_and_json(trained, tmp_path):
    data, out, _ = trained
    folder = data / "Testing" / "glioma_tumor"
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    result = _run("predict", folder, tmp_path / "bad.jpg", "--model", out / "model.safetensors", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 9
    good = [r for r in rows if "error" not in r]
    assert len(good) == 8 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in good)
    assert [r for r in rows if "error" in r][0]["path"].endswith("bad.jpg")
    table = _run("predict", folder / "img (0).jpg", "--model", out / "model.safetensors")
    assert table.returncode == 0 and "img (0).jpg" in table.stdout and "pituitary" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "{tmp}/missing"], "data folder not found"),
        (["data", "info", "--data", "{tmp}"], "no class folders"),
        (["predict", "{tmp}", "--model", "{model}"], "holds no"),
        (["predict", "{image}", "--model", "{tmp}/junk.safetensors"], "not a braintumor checkpoint"),
        (["evaluate", "{tmp}/junk.safetensors"], "not a braintumor checkpoint"),
        (["train", "--data", "{tmp}", "--epochs", "0"], "--epochs: must be an integer in 1..10000"),
        (["train", "--data", "{tmp}", "--folds", "3", "--no-test"], "--no-test does not combine with --folds"),
        (["train", "--data", "{tmp}", "--exclude", "{tmp}/missing.csv"], "cannot read the list of images"),
    ],
)
def test_expected_errors_are_one_clear_message(trained, tmp_path, capsys, args, message):
    data, out, _ = trained
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    image = data / "Testing" / "glioma_tumor" / "img (0).jpg"
    args = [a.format(tmp=tmp_path, model=out / "model.safetensors", image=image) for a in args]
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and "Traceback" not in err
    assert err.startswith("error: ")


def test_no_test_trains_without_looking_at_the_test_split(trained, tmp_path, capsys):
    data, _, _ = trained
    out = tmp_path / "run"
    result = _run("train", "--data", data, "--out", out, "--epochs", "1", "--image-size", "32", "--batch-size", "8",
                  "--seed", "3", "--no-test", "--json", "-q")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["test"] == "not evaluated" and 0 <= shown["val_acc"] <= 1 and shown["best_epoch"] == 1
    assert "accuracy" not in shown and shown["temperature"] > 0
    assert not (out / "test_metrics.json").exists() and not (out / "report.md").exists()
    _print_validation(out, as_json=False)  # what the same run prints without --json
    text = capsys.readouterr().out
    assert "validation accuracy" in text and "test accuracy" not in text and "braintumor evaluate" in text
    later = _run("evaluate", out / "model.safetensors", "--data", data, "--json")  # the test split, looked at once
    assert later.returncode == 0 and json.loads(later.stdout)["n"] > 0


def test_a_run_in_out_is_not_replaced_unless_asked(trained, tmp_path, capsys):
    import shutil

    data, first, _ = trained
    out = shutil.copytree(first, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--image-size", "32", "--batch-size", "8",
            "--seed", "4", "--no-test", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*args, "--resume", "--overwrite"]) == 2 and "contradict" in capsys.readouterr().err
    # --overwrite starts over: the old run's checkpoints and report go, the user's own file stays
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "report.md").exists() and not (out / "test_metrics.json").exists()
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "model.json").read_text())["train_config"]["seed"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_exclude_trains_without_the_listed_images_and_keeps_the_test_split(trained, tmp_path, capsys):
    data, first, _ = trained
    before = json.loads((first / "split.json").read_text())
    drop = before["train"][:3] + before["val"][:1] + before["test"][:1]
    rel = [str(Path(p).relative_to(data)) for p in drop]
    listing = tmp_path / "label_issues.csv"  # the shape label-issues writes
    listing.write_text("rank,path,label\n" + "".join(f'{i},"{p}",glioma\n' for i, p in enumerate(rel)))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--image-size", "32", "--batch-size", "8",
            "--seed", "3", "--exclude", str(listing), "--no-test", "--json", "-q"]
    assert main(args) == 0
    after = json.loads((out / "split.json").read_text())
    assert after["test"] == before["test"]  # excluded test images are still tested on
    assert after["train"] == [p for p in before["train"] if p not in drop]
    assert after["val"] == [p for p in before["val"] if p not in drop]
    assert after["excluded"] == sorted(rel)
    capsys.readouterr()
    # a list made for other data is one clear message before any training, and the run in --out stays
    listing.write_text("Training/glioma_tumor/not-here.jpg\n")
    assert main([*args, "--overwrite"]) != 0
    err = capsys.readouterr().err
    assert "1 of the images to exclude are not in" in err and "not-here.jpg" in err and "Traceback" not in err
    assert json.loads((out / "split.json").read_text()) == after and (out / "model.safetensors").is_file()


def test_relabel_trains_on_reviewed_corrections_and_the_report_says_so(trained, tmp_path, capsys):
    data, first, _ = trained
    before = json.loads((first / "split.json").read_text())
    fixed = {before["train"][0]: "pituitary", before["test"][0]: "no_tumor"}
    listing = tmp_path / "label_issues.csv"  # label-issues' CSV, reviewed: one row left as it was
    listing.write_text("rank,path,source,label,suggested,p_label,p_suggested,corrected\n"
                       + "".join(f'{i},"{Path(p).relative_to(data)}",Training,glioma,meningioma,0.1,0.8,{c}\n'
                                 for i, (p, c) in enumerate(fixed.items()))
                       + f'3,"{Path(before["val"][0]).relative_to(data)}",Training,glioma,meningioma,0.1,0.8,\n')
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--image-size", "32", "--batch-size", "8",
            "--seed", "3", "--relabel", str(listing), "-q"]
    assert main(args) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["test"] == before["test"] and split["train"] == before["train"]
    assert split["relabelled"] == {before["train"][0]: "pituitary"}  # only the training part's correction
    config = json.loads((out / "model.json").read_text())["train_config"]
    assert config["relabel"] == {str(Path(p).relative_to(data)): c for p, c in fixed.items()}
    report = (out / "report.md").read_text()
    assert "labels corrected in training and validation" in report and "1 of its images among those corrected" in report
    capsys.readouterr()
    # a class that is not one is a clear message before training, and the run in --out stays
    listing.write_text(f'path,corrected\n"{Path(before["train"][1]).relative_to(data)}",tumour\n')
    assert main([*args, "--overwrite"]) != 0
    err = capsys.readouterr().err
    assert "'tumour' is not a class" in err and "glioma, meningioma, no_tumor, pituitary" in err and "Traceback" not in err
    assert json.loads((out / "split.json").read_text()) == split


def test_evaluate_with_runs_of_the_same_split_scores_their_ensemble_and_refuses_a_leaking_member(trained, tmp_path, capsys):
    from braintumor.evaluation.evaluator import predict_test_split

    data, first, _ = trained
    common = ["--data", str(data), "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--no-test", "-q"]
    assert main(["train", *common, "--seed", "3", "--train-seed", "4", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", *common, "--seed", "5", "--out", str(tmp_path / "other-split")]) == 0
    a, b = first / "model.safetensors", tmp_path / "b" / "model.safetensors"
    capsys.readouterr()
    assert main(["evaluate", str(a), "-m", str(b), "--against", str(a), "--out", str(tmp_path / "ens"), "--json", "-q"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    alone = [predict_test_split(m, progress=False, groups=False) for m in (a, b)]
    assert not np.allclose(alone[0].probs, alone[1].probs)
    mean = (alone[0].probs + alone[1].probs) / 2
    assert metrics["accuracy"] == pytest.approx(float((mean.argmax(1) == alone[0].labels).mean()))
    assert metrics["loss"] == pytest.approx(float(-np.log(mean[np.arange(len(mean)), alone[0].labels]).mean()), rel=1e-6)
    assert metrics["ensemble"] == [str(a), str(b)] and "temperature" not in metrics
    assert metrics["against"]["accuracy"] == pytest.approx(float((alone[0].probs.argmax(1) == alone[0].labels).mean()))
    ensemble = predict_test_split(a, members=[b], progress=False, groups=False)  # the API keeps each model's own
    assert len(ensemble.member_probs) == 2 and alone[0].member_probs == []
    for own, single in zip(ensemble.member_probs, alone):
        np.testing.assert_allclose(own, single.probs, atol=1e-6)
    np.testing.assert_allclose(ensemble.probs, mean, atol=1e-6)
    assert "2 models averaged" in (tmp_path / "ens" / "report.md").read_text()
    assert (first / "report.md").read_text().count("models averaged") == 0  # the first run's own report is untouched
    # a run of another split trained on some of these test images: refused before any report
    leaking = tmp_path / "other-split" / "model.safetensors"
    assert main(["evaluate", "-m", str(a), str(leaking), "--out", str(tmp_path / "leak"), "-q"]) != 0
    err = capsys.readouterr().err
    assert "trained or early-stopped on" in err and "would leak" in err and "Traceback" not in err
    assert not (tmp_path / "leak" / "report.md").exists()
    assert main(["evaluate", "-m", str(a), "-m", str(b)]) != 0
    assert "needs its own folder" in capsys.readouterr().err


def test_data_info_json(trained, capsys):
    data, _, _ = trained
    assert main(["data", "info", "--data", str(data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 64 and info["counts"]["Testing"]["no_tumor"] == 8


def test_help_for_every_subcommand():
    for cmd in (["train"], ["evaluate"], ["predict"], ["data", "info"], ["data", "fetch"]):
        result = _run(*cmd, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_interrupted_training_leaves_a_checkpoint_that_resumes(tmp_path, sig):
    import signal
    import time

    from synthetic import make_tree

    data = make_tree(tmp_path / "data", per_class=4, size=32)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "braintumor", "train", "--data", str(data), "--out", str(out), "--image-size", "32",
            "--batch-size", "8", "-q", "--patience", "1000"]
    # (A patience longer than the run: on this tiny dataset early stopping could otherwise end the
    # run, about a second in, before a slow, loaded machine gets the signal to it.)
    # Ctrl-C as in a terminal. A child inherits an ignored SIGINT (a shell script's `cmd &` runs with
    # SIGINT ignored), and training rightly leaves an ignored SIGINT alone.
    proc = subprocess.Popen([*args, "--epochs", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 1):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    if sig == "SIGINT":
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err, (proc.returncode, err)
    done = (out / "metrics.jsonl").read_text().count("\n")
    resumed = subprocess.run([*args, "--epochs", str(done + 2), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr  # from the last epoch whose checkpoint was complete
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, done + 3))


@pytest.mark.parametrize("command", ["evaluate", "export", "predict", "explain"])
def test_an_ensemble_is_named_the_same_way_on_every_command(command):
    from braintumor.cli.common import models_of

    inputs = ["x.png"] if command in ("predict", "explain") else []
    args = build_parser().parse_args([command, *inputs, "-m", "a.safetensors", "--model", "b.safetensors", "-m", "c.safetensors", "d.safetensors"])
    assert models_of(args) == ["a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors"]
