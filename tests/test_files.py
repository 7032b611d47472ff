"""braintumor.files: atomic writes, temporaries of killed writers, the output-folder lock, and
output errors turned into one message."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading

import pytest

from braintumor import files
from braintumor.errors import BrainTumorError
from braintumor.files import OutputError
from diskfaults import failing_disk, read_only_folder  # noqa: F401 (fixtures)


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = files.write_text(tmp_path / "new" / "a.txt", "one")
    assert path.read_text() == "one"
    files.write_json(path, {"two": 2})
    assert json.loads(path.read_text()) == {"two": 2}
    assert os.listdir(path.parent) == ["a.txt"]


@pytest.mark.parametrize("code, words, reason", [
    (errno.ENOSPC, "no space left", "no-space"), (errno.EDQUOT, "quota", "no-space"),
    (errno.EROFS, "read-only", "read-only"), (errno.EACCES, "permission denied", "read-only"),
])
def test_a_failing_write_keeps_the_old_file_and_names_the_cause(tmp_path, failing_disk, code, words, reason):
    path = files.write_text(tmp_path / "a.txt", "old")
    failing_disk(code, limit=3)
    with pytest.raises(OutputError) as caught:
        files.write_text(path, "a much longer new content")
    assert words in caught.value.message and str(path) in caught.value.message and caught.value.hint
    assert caught.value.reason == reason and caught.value.exit_code == 2
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]  # nothing half written


def test_a_path_that_is_a_file_or_a_folder_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder") as caught:
        files.write_text(tmp_path / "file" / "a.txt", "y")
    assert caught.value.reason == "not-a-folder"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        files.make_folder(tmp_path / "file" / "below")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match="it is a folder") as caught:
        files.write_text(tmp_path / "folder", "y")
    assert caught.value.reason == "is-a-folder" and (tmp_path / "folder").is_dir()


def test_an_error_inside_the_writer_removes_the_temporary(tmp_path):
    def half_then_fail(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "a.bin", half_then_fail)
    assert os.listdir(tmp_path) == []


def test_temporaries_have_unique_names_and_those_of_dead_writers_are_removed(tmp_path):
    names = {files.temporary_path(tmp_path / "a.txt").name for _ in range(50)}
    assert len(names) == 50 and all(files.is_temporary(n) and n.startswith(".a.txt.") for n in names)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".model.safetensors.{dead_pid}.0123abcd.tmp"
    live = tmp_path / f".model.safetensors.{os.getppid()}.0123abcd.tmp"
    mine = files.temporary_path(tmp_path / "x")
    legacy = tmp_path / "last_state.pt.tmp"
    for path in (left, live, mine, legacy, tmp_path / "keep.txt"):
        path.write_text("x")
    assert sorted(files.remove_temporaries(tmp_path, legacy=("last_state.pt.tmp",))) == sorted([left, legacy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name, "keep.txt"])
    # Holding the folder's lock, no one else writes there: every temporary but this process's goes.
    assert files.remove_temporaries(tmp_path, all_but_ours=True) == [live]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "keep.txt"])


HOLD = """
import sys, time
from braintumor.files import locked_folder
with locked_folder(sys.argv[1], command="braintumor train --out RUN"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold_lock(folder, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_folder_refuses_another_process_naming_it_and_a_killed_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = _hold_lock(folder, 60)
    try:
        with pytest.raises(BrainTumorError) as caught:
            with files.locked_folder(folder):
                pass
        message = caught.value.message
        assert "in use by another braintumor process" in message and f"pid {holder.pid}" in message
        assert "braintumor train --out RUN" in message and "--out" in caught.value.hint
        holder.kill()  # kill -9: the kernel releases the lock; its file stays behind
        holder.wait()
        assert (folder / files.LOCK_NAME).is_file()
        with files.locked_folder(folder, command="second"):
            record = json.loads((folder / files.LOCK_NAME).read_text())
            assert record["pid"] == os.getpid() and record["command"] == "second"
        assert not (folder / files.LOCK_NAME).exists()  # released: its file goes
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_reentrant_in_one_thread_and_refused_in_another(tmp_path):
    folder = tmp_path / "out"
    refused = []

    def other_thread():
        try:
            with files.locked_folder(folder):
                pass
        except BrainTumorError as exc:
            refused.append(exc.message)

    with files.locked_folder(folder):
        with files.locked_folder(folder):  # e.g. evaluate inside a command holding the run
            assert files.holds_lock(folder)
        assert files.holds_lock(folder)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert not files.holds_lock(folder) and len(refused) == 1 and "in use" in refused[0]
    with files.locked_folder(folder):  # free again
        pass


def test_taking_a_folders_lock_removes_the_temporaries_of_killed_writers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".report.md.{int(dead.stdout)}.0123abcd.tmp"
    left.write_text("half")
    with files.locked_folder(tmp_path):
        assert not left.exists()


def test_a_folder_made_for_the_lock_and_left_empty_goes_with_it(tmp_path):
    with files.locked_folder(tmp_path / "new" / "out") as folder:
        assert folder.is_dir()
    assert not (tmp_path / "new" / "out").exists()
    with files.locked_folder(tmp_path / "new" / "out") as folder:
        files.write_text(folder / "a.txt", "kept")
    assert os.listdir(tmp_path / "new" / "out") == ["a.txt"]


def test_existing_only_locks_only_a_folder_with_a_lock_file(tmp_path):
    with files.locked_folder(tmp_path / "plain", existing_only=True) as folder:
        assert not (folder / files.LOCK_NAME).exists() and not files.holds_lock(folder)
    holder = _hold_lock(tmp_path / "run", 60)
    try:
        with pytest.raises(BrainTumorError, match="in use"):
            with files.locked_folder(tmp_path / "run", existing_only=True):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_read_only_folder_is_refused_before_anything_is_written(read_only_folder):
    with pytest.raises(OutputError) as caught:
        with files.locked_folder(read_only_folder / "run"):
            pass
    assert caught.value.reason == "read-only" and str(read_only_folder / "run") in caught.value.message
    with pytest.raises(OutputError, match="cannot write"):
        with files.locked_folder(read_only_folder):
            pass
    with pytest.raises(OutputError, match="cannot write"):
        files.write_text(read_only_folder / "a.txt", "x")
    assert os.listdir(read_only_folder) == []
