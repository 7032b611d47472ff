"""Disks that refuse: fixtures for the tests of every writer (imported by test modules as
``from diskfaults import ...``; a plain module, like ``synthetic``).

- `failing_disk`: every file written through `braintumor.files` fails with a chosen errno
  (``ENOSPC``: a full disk; ``EROFS``: a read-only one) after a chosen number of bytes.
- `read_only_folder`: a real read-only folder: a read-only tmpfs when running as root (root
  ignores permissions), a folder without write permission otherwise.
- `small_disk`: a real tmpfs of a given size (root only; skipped elsewhere).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from braintumor import files


class FailingFile(io.FileIO):
    """A temporary file whose writes fail with `code` once `limit` bytes are written."""

    limit = 0
    code = errno.ENOSPC

    def write(self, data):
        if self.tell() + len(data) > self.limit:
            super().write(bytes(data)[: max(0, self.limit - self.tell())])
            raise OSError(self.code, os.strerror(self.code))
        return super().write(data)


@pytest.fixture
def failing_disk(monkeypatch):
    """``failing_disk(code, limit, name, occurrence)``: from now on, files written through
    braintumor.files fail with `code` after `limit` bytes; with `name`, only from the
    `occurrence`-th write of a file of that name on (every file after it fails too, as on a disk
    that has filled up). ``failing_disk(None)`` mends the disk."""
    original = files._open_temporary

    def fail(code: int | None = errno.ENOSPC, limit: int = 0, name: str | None = None, occurrence: int = 1):
        failing = type("Failing", (FailingFile,), {"limit": limit, "code": code})
        seen = [0]
        broken = [name is None]

        def open_temporary(path):
            if name is not None and files._TEMPORARY.match(path.name)["name"] == name:
                seen[0] += 1
                broken[0] = broken[0] or seen[0] >= occurrence
            return failing(path, "xb") if broken[0] else original(path)

        monkeypatch.setattr(files, "_open_temporary", original if code is None else open_temporary)

    yield fail


def _mount(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A real folder that refuses writes (EROFS as root, EACCES otherwise)."""
    folder = tmp_path / "read-only"
    if os.geteuid() == 0:
        if not _mount(folder, "ro,size=64k"):
            pytest.skip("running as root, and a read-only tmpfs cannot be mounted here")
        yield folder
        _unmount(folder)
        return
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a real tmpfs of `size` (e.g. "2m") mounted in tmp_path (root only)."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        if not _mount(folder, f"size={size}"):
            pytest.skip("a tmpfs cannot be mounted here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        _unmount(folder)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; returns the filler file (delete it to
    free the space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
                f.flush()
        except OSError:
            pass
    return filler
