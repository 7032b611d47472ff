"""The HTTP API of `braintumor serve` through FastAPI's TestClient: every endpoint, every error
status, DICOM, and a batch of good and bad files as the page sends them."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tempfile
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from braintumor.inference.predictor import Predictor
from braintumor.serve import create_app
from serve_images import dicom_bytes, encode, png_bomb, slice_rgb, tiff16

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def client(tiny_predictor):
    with TestClient(create_app(tiny_predictor, workers=2, queue=4)) as test_client:
        yield test_client


def upload(client, data: bytes, name: str = "scan.png", path: str = "/v1/predict", **kwargs):
    return client.post(path, files={"file": (name, data, "application/octet-stream")}, **kwargs)


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The answer has `status` and the stable error body, and shows no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def test_healthz_model_and_schema(client, tiny_predictor, tiny_checkpoint):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert model["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert model["input_size"] == 128
    assert model["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert model["version"].endswith(model["sha256"][:12])
    assert "not a medical device" in model["notice"]
    assert model["explain_available"] is True and model["ood_threshold"] == pytest.approx(tiny_predictor.threshold)
    assert "checkpoint" in model["figures_source"]  # not the shipped model: no model-card figures
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz"} <= set(schema["paths"])
    for status in ("413", "415", "422", "503"):
        error = schema["paths"]["/v1/predict"]["post"]["responses"][status]
        assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert client.get("/docs").status_code == 200


def test_shipped_model_reports_the_model_card_figures():
    from braintumor.serve.app import DEFAULT_MODEL, SHIPPED_FIGURES, _model_description

    class Shipped:  # what _model_description reads of a Predictor of the shipped model
        paths, classes, threshold = [DEFAULT_MODEL], ["glioma", "meningioma", "no_tumor", "pituitary"], 16.4
        info = type("Info", (), {"backbone": "tf_efficientnet_lite0", "tta": True, "metrics": {},
                                 "preprocess": type("P", (), {"image_size": 160})()})()
        runtime = type("R", (), {"name": "onnx", "tta": True})()

    model = _model_description(Shipped(), 1024, True)
    assert model["figures"] == SHIPPED_FIGURES and "MODEL_CARD.md" in model["figures_source"]


def test_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Research use only — not a medical device" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert "http://" not in answer.text and "https://" not in answer.text
    assert_error(client.get("/static/../app.py"), 404)
    assert_error(client.get("/static/secret.js"), 404, "not_found")


def test_predict_matches_the_cli_record(client, tiny_predictor, tmp_path):
    rgb = slice_rgb(label=0)
    path = tmp_path / "slice.png"
    path.write_bytes(encode(rgb, "PNG"))
    answer = upload(client, path.read_bytes(), "slice.png")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["filename"] == "slice.png" and body["media_type"] == "image/png"
    assert "not a medical device" in body["notice"]
    (record,) = body["predictions"]
    expected = tiny_predictor.predict([path])[0]
    assert record["label"] == expected.label == "glioma"
    assert record["accepted"] is True and record["ood_score"] == pytest.approx(expected.ood_score, rel=1e-5)
    assert record["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert record["frame"] is None and record["reason"] is None and isinstance(record["warnings"], list)


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF16"])
def test_predict_reads_every_type_from_its_content(client, fmt):
    rgb = slice_rgb(label=3, seed=1)
    data = tiff16(rgb[:, :, 0].astype(np.uint16) * 200) if fmt == "TIFF16" else encode(rgb, fmt)
    answer = upload(client, data, "no-extension")  # the name says nothing; the bytes do
    assert answer.status_code == 200, answer.text
    assert answer.json()["media_type"] == {"JPEG": "image/jpeg", "BMP": "image/bmp", "TIFF16": "image/tiff"}[fmt]
    assert answer.json()["predictions"][0]["top_class"] in ("glioma", "meningioma", "no_tumor", "pituitary")


def test_dicom_single_and_multi_frame(client, tmp_path):
    gray = slice_rgb(label=1, seed=2)[:, :, 0]
    single = upload(client, dicom_bytes(tmp_path, gray), "slice.dcm")
    assert single.status_code == 200, single.text
    assert single.json()["media_type"] == "application/dicom"
    assert single.json()["predictions"][0]["frame"] is None

    series = dicom_bytes(tmp_path, np.stack([slice_rgb(label=i, seed=i)[:, :, 0] for i in range(3)]))
    every = upload(client, series, "series.dcm").json()["predictions"]
    assert [r["frame"] for r in every] == [1, 2, 3]
    (second,) = upload(client, series, "series.dcm", params={"frame": 2}).json()["predictions"]
    assert second["frame"] == 2 and second["probabilities"] == pytest.approx(every[1]["probabilities"])
    assert "no frame 9" in assert_error(upload(client, series, "series.dcm", params={"frame": 9}), 422,
                                        "unreadable_image")["message"]
    assert_error(upload(client, series, params={"frame": 0}), 422, "invalid_request")


def test_too_many_frames_are_refused(tiny_predictor, tmp_path):
    series = dicom_bytes(tmp_path, np.stack([slice_rgb(seed=i)[:, :, 0] for i in range(3)]))
    with TestClient(create_app(tiny_predictor, max_frames=2)) as small:
        assert "more than 2 frames" in assert_error(upload(small, series), 422, "unreadable_image")["message"]
        assert upload(small, series, params={"frame": 3}).status_code == 200


def test_unsupported_content_is_415_whatever_its_name(client):
    gif = encode(slice_rgb(), "GIF")
    for data, name in [(b"just some text\n" * 10, "scan.png"), (gif, "scan.jpg"), (b"%PDF-1.7\n", "scan.dcm")]:
        error = assert_error(upload(client, data, name), 415, "unsupported_media_type")
        assert "JPEG, PNG, BMP, TIFF or DICOM image or a NIfTI volume" in error["message"] and error["hint"]
    # a real PNG named like a text file is read
    assert upload(client, encode(slice_rgb(), "PNG"), "notes.txt").status_code == 200


def _volume_bytes(gzipped: bool = True) -> bytes:
    """A small RAS head volume (24 axial slices, the first two and last two empty), as a
    .nii(.gz) file's bytes."""
    import gzip

    import nibabel

    x, y, z = np.mgrid[:64, :64, :24].astype(float)
    data = np.zeros((64, 64, 24), np.float32)
    data[((x - 32) / 26) ** 2 + ((y - 32) / 22) ** 2 + ((z - 11.5) / 11) ** 2 <= 1] = 100
    data[:, :, :2] = data[:, :, 22:] = 0
    data[((x - 24) ** 2 + (y - 28) ** 2 <= 25) & (z >= 10) & (z <= 13)] = 250
    raw = nibabel.Nifti1Image(data, np.eye(4)).to_bytes()
    return gzip.compress(raw) if gzipped else raw


def test_a_volume_is_predicted_slice_by_slice_and_summed_up(client):
    for gzipped, name in ((True, "brain.nii.gz"), (False, "brain.nii")):
        response = upload(client, _volume_bytes(gzipped), name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["media_type"] == "application/x-nifti"
        frames = [r["frame"] for r in body["predictions"]]
        assert frames == sorted(frames) and set(frames) <= set(range(3, 23)) and len(frames) >= 10
        volume = body["volume"]
        assert volume["predicted"] == len(frames) and volume["axis"] == 2
        assert volume["predicted"] + volume["skipped"] == 24
        assert sum(volume["class_counts"].values()) == len(frames)
        assert set(volume["evidence_slices"]) <= set(frames)
        assert volume["notice"] == "slice-level evidence, not a diagnosis" and volume["text"]
    one = upload(client, _volume_bytes(), "brain.nii.gz", params={"frame": 12}).json()
    assert [r["frame"] for r in one["predictions"]] == [12] and one["volume"]["predicted"] == 1
    # an image is not a volume: no summary
    assert upload(client, encode(slice_rgb(), "PNG")).json()["volume"] is None


def test_a_volume_is_explained_one_slice_at_a_time(client):
    error = assert_error(upload(client, _volume_bytes(), "brain.nii.gz", path="/v1/explain"), 422, "choose_slice")
    assert "frame" in error["hint"]
    explained = upload(client, _volume_bytes(), "brain.nii.gz", path="/v1/explain", params={"frame": 12})
    assert explained.status_code == 200, explained.text
    assert [r["frame"] for r in explained.json()["predictions"]] == [12]
    out_of_range = upload(client, _volume_bytes(), "brain.nii.gz", path="/v1/explain", params={"frame": 30})
    assert "out of range" in assert_error(out_of_range, 422, "unreadable_image")["message"]


def test_a_volume_larger_than_the_limit_once_unpacked_is_refused(tiny_predictor):
    """A small gzipped upload can unpack to a gigabyte: the server reads at most --max-volume-mb."""
    import gzip

    import nibabel

    big = gzip.compress(nibabel.Nifti1Image(np.zeros((256, 256, 64), np.float32), np.eye(4)).to_bytes())  # 16 MiB
    assert len(big) < 1024 * 1024
    with TestClient(create_app(tiny_predictor, max_volume_mb=4)) as small:
        error = assert_error(upload(small, big, "zeros.nii.gz"), 422, "unreadable_image")
        assert "unpacks to more than 4,194,304 bytes" in error["message"] and "downsample" in error["hint"]
        assert upload(small, _volume_bytes(), "brain.nii.gz").status_code == 200


def test_unreadable_images_are_422(client):
    jpeg = encode(slice_rgb(), "JPEG")
    assert "truncated" in assert_error(upload(client, jpeg[: len(jpeg) // 3]), 422, "unreadable_image")["message"]
    assert_error(upload(client, b""), 422, "empty_file")
    assert "too large to decode safely" in assert_error(upload(client, png_bomb()), 422, "unreadable_image")["message"]
    assert_error(client.post("/v1/predict"), 422, "invalid_request")
    assert_error(client.post("/v1/predict", data={"other": "x"}), 422, "invalid_request")
    assert_error(client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"}), 422)


def test_upload_limit_is_413_by_header_and_by_bytes_received(tiny_predictor):
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    data = encode(big, "PNG")  # about 270 kB of noise
    assert len(data) > 200 * 1024
    with TestClient(create_app(tiny_predictor, max_upload_mb=0.1)) as small:
        assert_error(upload(small, data), 413, "upload_too_large")  # Content-Length says it

        form = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--b0undary--\r\n")

        def chunks():  # no Content-Length: the limit counts what arrives
            for start in range(0, len(form), 16 * 1024):
                yield form[start : start + 16 * 1024]

        streamed = small.post("/v1/predict", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=b0undary"})
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "upload_too_large")
        assert upload(small, encode(slice_rgb(), "PNG")).status_code == 200  # small files still pass
        assert_error(small.post("/v1/predict", content=b"x", headers={"content-length": "abc"}), 400)


def test_http_errors_have_the_json_body(client):
    assert_error(client.get("/no/such/path"), 404, "not_found")
    wrong = client.get("/v1/predict")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    assert_error(client.delete("/healthz"), 405)
    no_boundary = client.post("/v1/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert_error(no_boundary, 400, "bad_request")


def test_internal_errors_are_500_without_a_traceback(tiny_predictor, caplog):
    class Broken:
        def __getattr__(self, name):
            return getattr(tiny_predictor, name)

    broken = Broken()
    app = create_app(broken)  # the warm-up uses the working runtime; then it breaks
    with TestClient(app, raise_server_exceptions=False) as failing:
        broken.runtime = type("R", (), {"run": staticmethod(lambda images: 1 / 0), "name": "onnx"})()
        with caplog.at_level(logging.ERROR, logger="braintumor.serve"):
            error = assert_error(upload(failing, encode(slice_rgb(), "PNG")), 500, "internal_error")
    assert "ZeroDivision" not in error["message"] and "division" not in error["message"]
    assert any("ZeroDivisionError" in r.getMessage() or r.exc_info for r in caplog.records)


def test_full_queue_answers_503_with_retry_after(tiny_predictor):
    gate, entered = threading.Event(), threading.Event()
    real_run = tiny_predictor.runtime.run

    class Gated:
        def __getattr__(self, name):
            return getattr(tiny_predictor, name)

    gated = Gated()
    app = create_app(gated, workers=1, queue=0)
    with TestClient(app) as busy:
        def slow_run(images):
            entered.set()
            gate.wait(10)
            return real_run(images)

        gated.runtime = type("R", (), {"run": staticmethod(slow_run), "name": "onnx"})()
        data = encode(slice_rgb(), "PNG")
        first = {}
        worker = threading.Thread(target=lambda: first.setdefault("answer", upload(busy, data)))
        worker.start()
        assert entered.wait(10)
        refused = upload(busy, data)
        assert_error(refused, 503, "busy")
        assert refused.headers["retry-after"] == "1"
        assert busy.get("/healthz").json() == {"status": "ok", "pending": 1, "capacity": 1}
        gate.set()
        worker.join(10)
        assert first["answer"].status_code == 200
        assert upload(busy, data).status_code == 200  # recovered at once


def test_explain_json_and_png(client):
    data = encode(slice_rgb(label=0), "PNG")
    answer = upload(client, data, path="/v1/explain")
    assert answer.status_code == 200, answer.text
    (record,) = answer.json()["predictions"]
    assert record["explained_class"] == record["top_class"] == "glioma"
    image = Image.open(io.BytesIO(base64.b64decode(record["image_png"])))
    heatmap = Image.open(io.BytesIO(base64.b64decode(record["heatmap_png"])))
    overlay = Image.open(io.BytesIO(base64.b64decode(record["overlay_png"])))
    assert image.size == heatmap.size == overlay.size == (128, 128)
    assert heatmap.mode == "RGBA" and image.mode == overlay.mode == "RGB"
    # the evidence of the glioma class lies in the blob's quadrant (top left) of the tiny model's slices
    alpha = np.asarray(heatmap)[:, :, 3].astype(float)
    assert alpha[:64, :64].mean() > alpha[64:, 64:].mean()

    png = upload(client, data, path="/v1/explain", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-braintumor-label"] == "glioma"
    assert Image.open(io.BytesIO(png.content)).size == (128, 128)

    other = upload(client, data, path="/v1/explain", params={"target": "pituitary"})
    assert other.json()["predictions"][0]["explained_class"] == "pituitary"
    assert_error(upload(client, data, path="/v1/explain", params={"target": "cat"}), 422, "invalid_request")
    assert_error(upload(client, b"text", path="/v1/explain"), 415)


def test_explain_several_frames_as_png_needs_a_frame(client, tmp_path):
    series = dicom_bytes(tmp_path, np.stack([slice_rgb(seed=i)[:, :, 0] for i in range(2)]))
    assert_error(upload(client, series, path="/v1/explain", headers={"Accept": "image/png"}), 422, "several_frames")
    one = upload(client, series, path="/v1/explain", params={"frame": 2}, headers={"Accept": "image/png"})
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"


def test_explain_of_an_onnx_model_is_501(tiny_checkpoint, serve_cache, monkeypatch):
    from braintumor.inference.runtime import onnx_cache_path

    monkeypatch.setenv("BRAINTUMOR_CACHE", str(serve_cache))
    graph = onnx_cache_path([tiny_checkpoint])
    assert graph.is_file()  # written when `tiny_predictor` was loaded
    with TestClient(create_app(Predictor(graph, threads=1))) as onnx_only:
        assert onnx_only.get("/v1/model").json()["explain_available"] is False
        assert upload(onnx_only, encode(slice_rgb(), "PNG")).status_code == 200
        assert_error(upload(onnx_only, encode(slice_rgb(), "PNG"), path="/v1/explain"), 501, "explain_unavailable")


def test_a_batch_of_good_and_bad_files_as_the_page_sends_them(client, tmp_path):
    """The page posts each file on its own: bad files get their error, the others their class."""
    jpeg = encode(slice_rgb(label=3, seed=5), "JPEG")
    batch = [("good.png", encode(slice_rgb(label=0), "PNG"), 200),
             ("notes.txt", b"meeting at ten", 415),
             ("broken.jpg", jpeg[:200], 422),
             ("slice.dcm", dicom_bytes(tmp_path, slice_rgb(label=1)[:, :, 0]), 200),
             ("empty.png", b"", 422),
             ("good.jpg", jpeg, 200)]
    for name, data, status in batch:
        answer = upload(client, data, name)
        assert answer.status_code == status, (name, answer.text)
        if status == 200:
            assert answer.json()["filename"] == name
        else:
            assert_error(answer, status)
    assert client.get("/healthz").json()["pending"] == 0


def test_one_log_line_per_request_without_image_content(client, caplog):
    with caplog.at_level(logging.INFO, logger="braintumor.serve"):
        upload(client, encode(slice_rgb(), "PNG"), "patient-name.png")
        client.get("/nope")
        client.get("/a%0Afake%20line")  # a decoded newline must not start a second log line
    lines = [r.getMessage() for r in caplog.records if r.name == "braintumor.serve"]
    assert len(lines) == 3
    assert lines[0].startswith("POST /v1/predict 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("GET /nope 404 ")
    assert lines[2].startswith("GET /a?fake line 404 ") and "\n" not in lines[2]
    assert not any("patient" in line or "PNG" in line for line in lines)


def test_nothing_is_written_or_kept(tiny_predictor, tmp_path, monkeypatch):
    """A large upload is spooled to a temporary file; it is gone after the answer, and nothing
    else is written (the working directory stays empty)."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    monkeypatch.chdir(work)
    noise = np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    assert len(data) > 1024 * 1024  # over Starlette's in-memory spool size
    with TestClient(create_app(tiny_predictor)) as fresh:
        for path in ("/v1/predict", "/v1/explain"):
            assert upload(fresh, data, path=path).status_code == 200
            assert list(spool.iterdir()) == []
    assert list(work.iterdir()) == []


def test_requests_are_served_concurrently(tiny_predictor):
    """Several clients at once are all answered."""
    with TestClient(create_app(tiny_predictor, workers=2, queue=8)) as shared:
        data = encode(slice_rgb(), "PNG")
        answers = []

        def client_loop():
            for _ in range(3):
                answers.append(upload(shared, data).status_code)

        threads = [threading.Thread(target=client_loop) for _ in range(4)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers == [200] * 12, answers
        assert time.perf_counter() - start < 30
