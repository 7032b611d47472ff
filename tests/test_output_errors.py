"""Every command that writes, on a read-only folder, a full disk and a path that is a file: one
``error:`` line and a ``hint:`` line, exit code 2, no traceback, nothing half written."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from braintumor import files
from diskfaults import failing_disk, read_only_folder  # noqa: F401 (fixtures)
from synthetic import make_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny training run (with its data) for the commands that need one."""
    from braintumor.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("writers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINTUMOR_CACHE", str(root / "cache"))
        data = make_tree(root / "data")
        out = train(TrainConfig(data=str(data), out=str(root / "run"), backbone="test_efficientnet", pretrained=False,
                                image_size=32, epochs=1, batch_size=8, threads=1, progress=False))
    return data, out / "model.safetensors"


# Each writer: how it is called with output PATH, and whether PATH is a folder or a file.
WRITERS = {
    "evaluate": (lambda r, c, image, out: ["evaluate", "-m", str(r[1]), "--out", str(out)], "folder"),
    "explain": (lambda r, c, image, out: ["explain", str(image), "-m", str(c), "--out", str(out)], "folder"),
    "export": (lambda r, c, image, out: ["export", "-m", str(c), "--out", str(out)], "model.onnx"),
    "export --int8": (lambda r, c, image, out: ["export", "-m", str(r[1]), "--int8", "--calibration", "8", "--out", str(out)],
                      "model-int8.onnx"),
    "fit-ood": (lambda r, c, image, out: ["fit-ood", "-m", str(r[1]), "--out", str(out)], "fitted.safetensors"),
    "audit": (lambda r, c, image, out: ["audit", "-d", str(r[0]), "--out", str(out)], "folder"),
    "predict --csv": (lambda r, c, image, out: ["predict", str(image), "-m", str(c), "--csv", str(out)], "out.csv"),
    "train": (lambda r, c, image, out: ["train", "--data", str(r[0]), "--out", str(out), "--backbone", "test_efficientnet",
                                        "--no-pretrained", "--image-size", "32", "--epochs", "1", "--no-test"], "folder"),
}


def _target(base: Path, kind: str) -> Path:
    return base / "out" if kind == "folder" else base / kind


def _one_clear_error(capsys, argv: list[str], *words: str) -> str:
    from braintumor.cli import main

    code = main([*argv, "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("error: ") == 1 and err.count("  hint: ") == 1, err
    message = err[err.index("error: "):]
    assert all(w in message for w in words), err
    return message


def _no_files_under(folder: Path) -> None:
    assert [p for p in folder.rglob("*") if p.is_file()] == [], "nothing may be left half written"


@pytest.fixture
def image(tmp_path) -> Path:
    import numpy as np
    from PIL import Image

    from synthetic import tumor_slice

    path = tmp_path / "scan.png"
    Image.fromarray(tumor_slice(0, np.random.default_rng(0), 128)).save(path)
    return path


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_read_only_folder(writer, run, tiny_checkpoint, image, read_only_folder, capsys):
    argv, kind = WRITERS[writer]
    out = _target(read_only_folder, kind)
    _one_clear_error(capsys, argv(run, tiny_checkpoint, image, out), f"cannot write {out}", "make this one writable")
    _no_files_under(read_only_folder)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk(writer, run, tiny_checkpoint, image, tmp_path, failing_disk, capsys):
    argv, kind = WRITERS[writer]
    base = tmp_path / "full"
    failing_disk(errno.ENOSPC, limit=100)
    _one_clear_error(capsys, argv(run, tiny_checkpoint, image, _target(base, kind)), "no space left on the device")
    if base.exists():
        _no_files_under(base)
    assert not [p for p in tmp_path.rglob("*") if files.is_temporary(p)]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_path_that_is_a_file(writer, run, tiny_checkpoint, image, tmp_path, capsys):
    argv, kind = WRITERS[writer]
    taken = tmp_path / "taken"
    taken.write_text("mine")
    out = taken if kind == "folder" else taken / kind
    _one_clear_error(capsys, argv(run, tiny_checkpoint, image, out), "is a file, not a folder")
    assert taken.read_text() == "mine"


def test_a_csv_on_a_device_that_is_full_or_a_folder(tiny_checkpoint, image, tmp_path, capsys):
    argv, _ = WRITERS["predict --csv"]
    _one_clear_error(capsys, argv(None, tiny_checkpoint, image, "/dev/full"), "cannot write /dev/full", "no space left")
    (tmp_path / "folder").mkdir()
    _one_clear_error(capsys, argv(None, tiny_checkpoint, image, tmp_path / "folder"), "it is a folder")
    assert list((tmp_path / "folder").iterdir()) == []


def test_label_issues_on_a_full_disk_and_a_read_only_folder(tiny_crossval, failing_disk, read_only_folder, tmp_path,
                                                            capsys):
    cv, _ = tiny_crossval
    out = read_only_folder / "issues"
    _one_clear_error(capsys, ["label-issues", str(cv), "--out", str(out)], f"cannot write {out}", "make this one writable")
    failing_disk(errno.ENOSPC, limit=100)
    _one_clear_error(capsys, ["label-issues", str(cv), "--out", str(tmp_path / "issues")], "no space left on the device")
    assert not (tmp_path / "issues").exists()


def test_a_folder_another_command_is_writing_is_refused(run, tiny_checkpoint, image, tmp_path, capsys):
    from braintumor.files import locked_folder

    argv, _ = WRITERS["evaluate"]
    with locked_folder(tmp_path / "busy", command="braintumor explain"):
        # (this test holds it in this thread; another thread or process is what the lock refuses)
        import threading

        errors = []
        thread = threading.Thread(target=lambda: errors.append(_refused_elsewhere(argv(run, tiny_checkpoint, image,
                                                                                       tmp_path / "busy"))))
        thread.start()
        thread.join()
    code, err = errors[0]
    assert code == 2 and "is in use by another braintumor process" in err and "braintumor explain" in err


def _refused_elsewhere(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    from braintumor.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([*argv, "-q"])
    return code, err.getvalue()
