"""`data fetch` against a local HTTP server (this machine has no internet)."""

import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest

from braintumor.errors import DataError
from braintumor.data.fetch import download, extract_dataset, fetch
from braintumor.data.dataset import scan

from synthetic import make_tree


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support, like a real download server."""

    ranges = True
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and self.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    make_tree(tmp_path / "src" / "Brain-Tumor-Classification-DataSet-master", per_class=2, size=16)
    with zipfile.ZipFile(root / "archive.zip", "w") as zf:
        for f in sorted((tmp_path / "src").rglob("*")):
            zf.write(f, f.relative_to(tmp_path / "src"))
    RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root / "archive.zip"
    httpd.shutdown()


def test_fetch_downloads_verifies_and_unpacks(server, tmp_path):
    url, archive = server
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = fetch(tmp_path / "data" / "sartaj", f"{url}/archive.zip", digest, progress=False)
    ds = scan(dest)
    assert len(ds) == 16 and set(ds.splits) == {"Training", "Testing"}


def test_interrupted_download_resumes_with_range(server, tmp_path):
    url, archive = server
    body = archive.read_bytes()
    target = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(body[:100])  # as left by an interrupted run
    download(f"{url}/archive.zip", target, hashlib.sha256(body).hexdigest(), progress=False)
    assert target.read_bytes() == body
    assert RangeHandler.requests[-1] == "bytes=100-"


def test_server_without_ranges_restarts_cleanly(server, tmp_path):
    url, archive = server
    RangeHandler.ranges = False
    try:
        (tmp_path / "a.zip.part").write_bytes(b"stale partial bytes")
        download(f"{url}/archive.zip", tmp_path / "a.zip", progress=False)
    finally:
        RangeHandler.ranges = True
    assert (tmp_path / "a.zip").read_bytes() == archive.read_bytes()


def test_checksum_mismatch_deletes_download(server, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match="checksum mismatch"):
        download(f"{url}/archive.zip", tmp_path / "a.zip", "0" * 64, progress=False)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_unreachable_and_missing(server, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download(f"{url}/nothing.zip", tmp_path / "x.zip", progress=False)
    with pytest.raises(DataError, match="cannot reach"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "y.zip", progress=False, timeout=2)


def test_unsafe_or_bad_archives(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract_dataset(evil, tmp_path / "d1")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a valid zip"):
        extract_dataset(tmp_path / "bad.zip", tmp_path / "d2")
