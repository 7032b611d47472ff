"""``braintumor data fetch``: download and unpack the public dataset archive.

The download goes to ``DEST.part`` first; an interrupted download resumes with an HTTP range
request (or starts over when the server does not honour ranges), the SHA-256 is checked, and
only then is the archive unpacked, member paths checked so nothing is written outside DEST.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from braintumor.errors import DataError

SARTAJ_URL = "https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet/archive/refs/heads/master.zip"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, target: Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> Path:
    """Download `url` to `target`, resuming a previous partial download; verify `sha256`."""
    target = Path(target)
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        return target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            response = None
        else:
            raise DataError(f"download failed: {url} answered HTTP {exc.code}", "check the URL or try again later") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"download failed: cannot reach {url} ({getattr(exc, 'reason', exc)})",
            "check your internet connection, or download the archive by hand and pass it with --archive",
        ) from None
    if response is not None:
        with response:
            resumed = have and getattr(response, "status", 200) == 206
            if not resumed:
                have = 0  # the server sent the whole file: start over
            total = response.headers.get("Content-Length")
            total = int(total) + have if total else None
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc="downloading", disable=not progress
            ) as bar:
                while block := response.read(1 << 16):
                    f.write(block)
                    bar.update(len(block))
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise DataError(
                f"checksum mismatch for {url}: expected {sha256}, got {actual}; the damaged download was deleted",
                "run the command again; if it keeps failing the archive has changed upstream, so check --sha256",
            )
    part.replace(target)
    return target


def extract_dataset(archive: Path, dest: Path) -> Path:
    """Unpack a zip archive and move its folder holding ``Training``/``Testing`` to `dest`."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest} already exists and is not empty", "choose another --dest or remove the folder")
    staging = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            root = staging.resolve()
            for member in zf.namelist():
                target = (staging / member).resolve()
                if root != target and root not in target.parents:
                    raise DataError(f"{archive}: member {member!r} would be written outside {dest}", "the archive is unsafe; do not use it")
            zf.extractall(staging)
    except zipfile.BadZipFile:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive} is not a valid zip archive", "delete it and run `braintumor data fetch` again") from None
    candidates = [p.parent for p in staging.rglob("*") if p.is_dir() and p.name.lower() in ("training", "train")]
    if not candidates:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive} holds no Training/ folder", "check that it is the brain-MRI dataset archive")
    found = min(candidates, key=lambda p: len(p.parts))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.rmdir()
    shutil.move(str(found), str(dest))
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch(dest: Path, url: str = SARTAJ_URL, sha256: str | None = None, archive: Path | None = None, progress: bool = True) -> Path:
    """Download (unless `archive` is given) and unpack the dataset into `dest`."""
    dest = Path(dest)
    if archive is None:
        archive = dest.with_name(dest.name + ".zip")
        download(url, archive, sha256, progress)
    elif sha256 is not None and sha256_of(Path(archive)) != sha256.lower():
        raise DataError(f"checksum mismatch for {archive}", "the archive is damaged or not the expected one")
    return extract_dataset(Path(archive), dest)
