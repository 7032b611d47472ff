"""Writing outputs safely: atomic files, a lock per output folder, and clear errors.

Every file the package writes goes through `atomic_write` (or `write_bytes`, `write_text`,
`write_json`): the bytes go to a temporary file of a unique name in the same folder
(``.NAME.<pid>.<random>.tmp``), are flushed to the disk, and the temporary is renamed over
``NAME`` in one step. A reader, or a process killed at any moment, sees the old file or the new
one, never half of one. A temporary left by a killed process is never read; `remove_temporaries`
deletes those in a folder.

`locked_folder` takes an exclusive lock on an output folder (``FOLDER/.lock``, held with
``flock``) for as long as a command writes into it, and removes the file when done. A second
process is refused with a message naming the holder (its pid, host, start time and command). The
kernel releases the lock of a process that dies, however it dies, so a killed run's lock (its
file left behind) is taken over without a word.

An `OSError` while writing (a read-only folder, a full disk, a file where a folder should be)
becomes an `OutputError`: one message and a hint, and nothing half written left behind.

In a data-parallel training job (`braintumor.distributed`) only rank 0 writes: on the other
ranks `set_writes(False)` makes every write, lock and clean-up here do nothing.

This module imports only the standard library and `braintumor.errors`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from braintumor.errors import BrainTumorError

LOCK_NAME = ".lock"

# ``.NAME.<pid>.<8 hex digits>.tmp``: what `temporary_path` makes, and all `remove_temporaries` removes.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")

# False in the ranks of a data-parallel job other than rank 0, which writes for all of them.
_writes = True


def set_writes(enabled: bool) -> None:
    """Let this process write files (the default), or make every write, lock and clean-up of
    this module a no-op (`braintumor.distributed.process_group` does so on ranks other than 0)."""
    global _writes
    _writes = bool(enabled)


class OutputError(BrainTumorError):
    """An output could not be written: a read-only folder, no space left, or a path that is a
    file where a folder is needed (or the reverse). Nothing half written is left behind.

    Parameters
    ----------
    message, hint : str
        As for `BrainTumorError`.
    reason : {"read-only", "no-space", "not-a-folder", "is-a-folder", "other"}
        What went wrong, for callers that add their own hint (`with_hint`).
    """

    def __init__(self, message: str, hint: str | None = None, reason: str = "other"):
        super().__init__(message, hint)
        self.reason = reason

    def with_hint(self, hint: str) -> "OutputError":
        """The same error with another hint."""
        return OutputError(self.message, hint, self.reason)


def output_error(exc: OSError, path: str | Path) -> OutputError:
    """Translate an `OSError` raised while writing `path` into an `OutputError`.

    Parameters
    ----------
    exc : OSError
        The error (its ``errno`` chooses the message).
    path : path
        What was being written.
    """
    code = exc.errno
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the file system is read-only" if code == errno.EROFS else "permission denied"
        return OutputError(f"cannot write {path}: {why}",
                           "choose a folder you can write to (--out), or make this one writable", "read-only")
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return OutputError(f"cannot write {path}: {why} (nothing was half written)",
                           "free some space, or write elsewhere with --out, and run the command again", "no-space")
    if code in (errno.ENOTDIR, errno.EEXIST):
        where = exc.filename if exc.filename and str(exc.filename) != str(path) else "a part of that path"
        return OutputError(f"cannot write {path}: {where} is a file, not a folder",
                           "choose another --out, or move that file out of the way", "not-a-folder")
    if code == errno.EISDIR:
        return OutputError(f"cannot write {path}: it is a folder, not a file",
                           "give the path of a file to write, not a folder", "is-a-folder")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}", "check the path and the disk, then run again")


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an `OSError` raised inside the block into the `OutputError` of writing `path`."""
    try:
        yield
    except OSError as exc:
        raise output_error(exc, path) from None


def make_folder(folder: str | Path) -> Path:
    """Create `folder` and its parents if needed; an `OutputError` if that is impossible (a
    read-only parent, a file in the way)."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise OutputError(f"cannot write into {folder}: it is a file, not a folder",
                          "choose another --out, or move that file out of the way", "not-a-folder")
    with output_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside `path`: ``.NAME.<pid>.<random>.tmp`` (hidden, unique to
    this process and call, so that two writers never share one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is named as `temporary_path` names its files."""
    return _TEMPORARY.match(Path(path).name) is not None


def _open_temporary(path: Path) -> BinaryIO:
    """Open a new temporary file for writing (the one place output files are opened)."""
    return open(path, "xb")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` atomically: `write` fills a binary file handle on a temporary name in the
    same folder, which is flushed to the disk and renamed over `path`.

    Parameters
    ----------
    path : path
        The file to (re)write; its folder is created if needed. A symbolic link's target is
        replaced; a device or a pipe (``/dev/stdout``) is written in place.
    write : callable
        Called with the open handle; writes the file's content to it.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    OutputError
        When the file cannot be written; `path` is then as it was, and the temporary is removed.
    """
    path = Path(path)
    if not _writes:
        return path
    if path.is_symlink():  # the file it names is replaced, not the link
        path = path.resolve()
    make_folder(path.parent)
    if path.is_dir():
        raise output_error(OSError(errno.EISDIR, "Is a directory", str(path)), path)
    if path.exists() and not path.is_file():  # a device or a pipe (/dev/stdout, /dev/full): written in place
        with output_errors(path), open(path, "wb") as handle:
            write(handle)
        return path
    tmp = temporary_path(path)
    try:
        with _open_temporary(tmp) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise output_error(exc, path) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    _sync_folder(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write `data` to `path` atomically (`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """Write `obj` as JSON, with a final newline, to `path` atomically (`atomic_write`)."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(folder: str | Path, all_but_ours: bool = False, legacy: tuple[str, ...] = ()) -> list[Path]:
    """Delete the temporaries that writers killed while writing left in `folder`.

    Parameters
    ----------
    folder : path
        Where to look (not recursively).
    all_but_ours : bool
        Remove every temporary not of this process. Right while holding the folder's lock,
        when no other process writes there; otherwise only those whose process has ended.
    legacy : tuple of str
        More names to remove (temporaries named by earlier versions, ``model.safetensors.tmp``).

    Returns
    -------
    list of Path
        The removed files.
    """
    folder = Path(folder)
    removed = []
    if not _writes:
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match:
            pid = int(match["pid"])
            stale = pid != os.getpid() if all_but_ours else not _process_alive(pid)
        else:
            stale = entry.name in legacy
        if stale and entry.is_file():
            _remove_quietly(entry)
            removed.append(entry)
    return removed


# Folders this process holds the lock of: {(real path, thread id): [descriptor, lock file, created, depth]}.
_held: dict[tuple[str, int], list] = {}
_held_guard = threading.Lock()


def _describe_holder(raw: str) -> str:
    """``pid 123 on host, since 2026-01-01 10:00:00: braintumor train ...`` from a lock file."""
    try:
        holder = json.loads(raw)
        return (f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}")
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet recorded itself"


def _current_command() -> str:
    args = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return " ".join(args)[:300]


def _lock_file(lock: Path) -> int:
    """Open `lock` (created if needed) and hold its ``flock``; returns the descriptor.

    The holder removes the file when it lets go, so a file locked here may have been removed
    (or replaced) meanwhile: then it is opened again, until the lock is held on the file that
    the path names.
    """
    while True:
        make_folder(lock.parent)  # (its holder may have removed it, had it created it)
        with output_errors(lock.parent):  # (named as the folder: the lock file is ours, not the user's)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = _describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            finally:
                os.close(fd)
            raise BrainTumorError(f"{lock.parent} is in use by another braintumor process ({holder})",
                                  "wait for it to finish, or write elsewhere with another --out") from None
        except OSError as exc:
            os.close(fd)
            raise output_error(exc, lock.parent) from None
        try:
            named = os.stat(lock)
        except FileNotFoundError:
            named = None
        held = os.fstat(fd)
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def _acquire(folder: Path, command: str | None, created: bool) -> tuple[int, Path, bool]:
    lock = folder / LOCK_NAME
    fd = _lock_file(lock)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": command or _current_command()}
    try:  # who holds it, for the message a second process gets (on a full disk it goes unsaid)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError:
        pass
    return fd, lock, created


def _release(fd: int, lock: Path, created: bool) -> None:
    try:  # removed while still held: a process waiting on this file then sees it gone (`_lock_file`)
        os.unlink(lock)
    except OSError:
        pass
    if created:  # a folder made for the lock, and left empty (the command failed before writing), goes too
        try:
            os.rmdir(lock.parent)
        except OSError:
            pass
    os.close(fd)  # releases the lock


@contextmanager
def locked_folder(folder: str | Path, command: str | None = None, existing_only: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of output folder `folder` inside the block.

    The folder is created if needed (and removed again if the block leaves it empty), and the
    temporaries of killed writers are removed from it. The lock is re-entrant within one thread
    (a command that locks a folder may call another that locks it again); another thread or
    process is refused.

    Parameters
    ----------
    folder : path
        The output folder; its lock file is ``folder/.lock``.
    command : str, optional
        What the holder is doing, for a refused process's message (default: this command line).
    existing_only : bool
        Lock only a folder that already has a lock file, i.e. one that a braintumor command
        writes as a whole (a run folder, a report folder), leaving other folders as they are:
        for commands that write one file into a folder of any kind (``export``, ``predict --csv``).

    Raises
    ------
    BrainTumorError
        When another process holds the lock; the message names it.
    OutputError
        When the folder or its lock file cannot be created.
    """
    folder = Path(folder)
    if not _writes or (existing_only and not (folder / LOCK_NAME).is_file()):
        yield folder
        return
    created = not folder.is_dir()
    make_folder(folder)
    key = (os.path.realpath(folder), threading.get_ident())
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            entry = _held[key] = [*_acquire(folder, command, created), 0]
            remove_temporaries(folder)  # those of writers that were killed
        entry[-1] += 1
    try:
        yield folder
    finally:
        with _held_guard:
            entry[-1] -= 1
            if entry[-1] == 0:
                del _held[key]
                _release(*entry[:-1])


def holds_lock(folder: str | Path) -> bool:
    """Whether this thread holds the lock of `folder` (`locked_folder`)."""
    return (os.path.realpath(folder), threading.get_ident()) in _held
