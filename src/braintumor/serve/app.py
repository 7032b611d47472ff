"""The web application of ``braintumor serve``: the HTTP API and the page, one FastAPI app.

`create_app` wraps a loaded `Predictor` (the model is loaded once, by the caller). Images are
decoded, predicted and explained in bounded thread pools (`braintumor.serve.pool`), so the
event loop only moves bytes; uploads are read into memory (Starlette spools a large one to a
temporary file, closed and removed after the response), nothing is written anywhere else and
nothing is kept. Every error is answered with the JSON body ``{"error": {"code", "message",
"hint"}}``, never with a traceback, and every request is logged in one line: method, path,
status, milliseconds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import time
from http import HTTPStatus
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from braintumor import __version__
from braintumor.data.imageio import ENCODED_TYPES, sniff_format
from braintumor.errors import ImageError, UnsupportedImageError
from braintumor.inference import memory
from braintumor.inference.predictor import DEFAULT_MODEL, Predictor
from braintumor.serve import schemas
from braintumor.serve.pool import Busy, InferencePool

log = logging.getLogger("braintumor.serve")

NOTICE = ("Research use only — not a medical device. Trained on public datasets of 2D slices and not "
          "validated clinically: do not use it for diagnosis.")

# The model card's headline figures (MODEL_CARD.md), for the shipped model only.
SHIPPED_FIGURES = [
    {"what": "test accuracy, Sartaj + Masoud-Training pooled, dedup protocol across both (leak-free), seed 0",
     "value": 0.9755, "detail": "875 of 897; this model"},
    {"what": "test accuracy on its held-out Masoud-Training images", "value": 0.9879, "detail": "571 of 578; this model"},
    {"what": "test accuracy on its held-out Sartaj images", "value": 0.9530, "detail": "304 of 319; this model"},
    {"what": "test accuracy on Sartaj's own dedup test split (kept out of its training), seed 0",
     "value": 0.9174, "detail": "300 of 327; this model"},
]

# What an upload may be (`sniff_format`'s names). A NIfTI volume is refused past `max_volume_mb`
# once unpacked: a small gzipped upload can unpack to a gigabyte.
SERVED_TYPES = ("JPEG", "PNG", "BMP", "TIFF", "DICOM", "NIFTI")

# The page: plain files shipped in the package, served from memory.
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                "form-action 'none'"),
    "Cache-Control": "no-cache",
}
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
MULTIPART_SLACK = 64 * 1024  # a request may exceed the upload limit by this much: form boundaries and headers


class ApiError(Exception):
    """An answer other than 2xx, with its JSON error body.

    Parameters
    ----------
    status : int
    code : str
        Stable machine-readable name (`schemas.ErrorDetail.code`).
    message, hint : str
    headers : dict, optional
    """

    def __init__(self, status: int, code: str, message: str, hint: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.hint, self.headers = status, code, message, hint, headers


def error_response(status: int, code: str, message: str, hint: str | None = None, headers: dict | None = None) -> JSONResponse:
    """The JSON error answer: ``{"error": {"code", "message", "hint"}}``."""
    body = {"error": {"code": code, "message": message, "hint": hint}}
    return JSONResponse(body, status_code=status, headers=headers)


def _status_code_name(status: int) -> str:
    """``not_found`` for 404, ``method_not_allowed`` for 405, ...: the HTTP phrase in snake case."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


_HTTP_HINTS = {
    400: "send a multipart/form-data request with the image in the field 'file' (see /docs)",
    404: "the API's paths are listed at /docs and /openapi.json",
    405: "see /docs for the methods each path accepts",
    413: "send a smaller file",
}


class RequestLog:
    """ASGI middleware: one log line per request (method, path, status, milliseconds; never
    the query, headers or body), and headers that every answer carries."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + COMMON_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            path = "".join(ch if ch.isprintable() else "?" for ch in scope["path"][:200])  # one line, whatever was sent
            log.info("%s %s %d %.1f ms", scope["method"], path, status, 1000 * (time.perf_counter() - start))


class UploadLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, by their declared
    ``Content-Length`` before reading anything, and by the bytes actually received."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, "upload_too_large", f"the request is larger than this server accepts "
                        f"({self.max_bytes - MULTIPART_SLACK:,} bytes per file)", _HTTP_HINTS[413])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                response = error_response(400, "bad_request", "the Content-Length header is not a number", _HTTP_HINTS[400])
                return await response(scope, receive, send)
            if int(declared) > self.max_bytes:
                error = self._too_large()
                response = error_response(error.status, error.code, error.message, error.hint, {"Connection": "close"})
                return await response(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # an HTTPException leaves FastAPI's body parsing as it is; `create_app` answers it in JSON
                    error = self._too_large()
                    raise StarletteHTTPException(413, error.message)
            return message

        await self.app(scope, counted_receive, send)


def _clean_name(name: str | None) -> str:
    """The uploaded file's base name, without control characters and at most 200 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200].strip()
    return name or "upload"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wants_png(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers ``image/png`` to JSON (by its q-values; JSON on a tie)."""
    quality = {}
    for part in (accept or "").split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    json_q = max(quality.get("application/json", 0.0), quality.get("application/*", 0.0), quality.get("*/*", 0.0))
    png_q = max(quality.get("image/png", 0.0), quality.get("image/*", 0.0))
    return png_q > json_q


def _page_file(name: str) -> bytes:
    return (resources.files("braintumor.serve") / "static" / name).read_bytes()


def _model_description(predictor: Predictor, max_upload_bytes: int, explain_available: bool) -> dict:
    """The answer of ``GET /v1/model``."""
    files = [{"file": p.name, "sha256": _sha256(p), "size_bytes": p.stat().st_size} for p in predictor.paths]
    if len(files) == 1:
        sha256 = files[0]["sha256"]
    else:
        sha256 = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    shipped = (len(files) == 1 and DEFAULT_MODEL.is_file() and predictor.paths[0].suffix == ".safetensors"
               and sha256 == _sha256(DEFAULT_MODEL))
    if shipped:
        figures, source = SHIPPED_FIGURES, "MODEL_CARD.md (the model shipped with braintumor)"
    else:
        metrics = predictor.info.metrics or {}
        figures = [{"what": f"validation {key.replace('_', ' ')}", "value": float(value), "detail": None}
                   for key, value in metrics.items() if key in ("val_acc", "val_loss", "val_acc_final")]
        source = "the validation figures stored in the checkpoint (not a test result)"
    info = predictor.info
    return {
        "name": " + ".join(f["file"] for f in files),
        "version": f"{__version__}+{sha256[:12]}",
        "sha256": sha256,
        "files": files,
        "braintumor_version": __version__,
        "backbone": info.backbone,
        "classes": list(predictor.classes),
        "input_size": info.preprocess.image_size,
        "test_time_augmentation": bool(getattr(predictor.runtime, "tta", info.tta)),
        "ood_threshold": predictor.threshold,
        "runtime": predictor.runtime.name,
        "explain_available": explain_available,
        "max_upload_bytes": max_upload_bytes,
        "figures": figures,
        "figures_source": source,
        "notice": NOTICE,
    }


def _record(predictor: Predictor, prediction) -> dict:
    """A prediction's JSON record: the CLI's record plus its warnings."""
    return {"frame": prediction.frame, "label": prediction.label, "top_class": prediction.top_class,
            "probabilities": prediction.probabilities, "accepted": prediction.accepted,
            "ood_score": prediction.ood_score, "reason": prediction.reason,
            "warnings": memory.result_warnings(predictor, prediction)}


def _b64_png(array) -> str:
    return base64.b64encode(memory.png_bytes(array)).decode("ascii")


ERROR_RESPONSES = {
    status: {"model": schemas.ErrorBody, "description": description}
    for status, description in [
        (400, "The request is not a readable multipart form."),
        (413, "The file is larger than the upload limit."),
        (415, "The content is not a JPEG, PNG, BMP, TIFF or DICOM image or a NIfTI volume (told from the bytes, not the name)."),
        (422, "A parameter is invalid, or the image cannot be decoded."),
        (503, "Every inference worker is busy and the queue is full; retry after `Retry-After` seconds."),
    ]
}


def create_app(
    predictor: Predictor,
    *,
    workers: int | None = None,
    queue: int = 16,
    max_upload_mb: float = 20.0,
    max_frames: int = 64,
    max_volume_mb: float = 256.0,
    explain_queue: int = 16,
    torch_threads: int | None = None,
) -> FastAPI:
    """The FastAPI application serving `predictor`: the HTTP API and the page.

    Parameters
    ----------
    predictor : Predictor
        The loaded model (one checkpoint, or an ensemble). Prediction runs in its runtime
        (onnxruntime by default, no PyTorch); ``/v1/explain`` loads the PyTorch networks on
        first use, and answers 501 for a model of ``.onnx`` files.
    workers : int, optional
        Threads that decode and predict at once (default: the machine's cores, at most 4).
    queue : int
        Predictions that may wait for a free thread; beyond them the answer is 503.
    max_upload_mb : float
        Largest file accepted, in MiB (more: 413).
    max_frames : int
        Most frames predicted from one multi-frame DICOM file (more: 422, unless ``frame`` picks one).
    max_volume_mb : float
        Largest NIfTI volume accepted once unpacked, in MiB (more: 422). Its slices are predicted
        and summed up (``volume`` in the answer); ``/v1/explain`` takes one slice (``frame``).
    explain_queue : int
        Explanations that may wait (they run one at a time: Grad-CAM hooks the shared network).
    torch_threads : int, optional
        PyTorch's threads for Grad-CAM (default: PyTorch's own, every core). ``braintumor serve``
        gives 1 unless ``--threads`` says otherwise: on a busy machine two threads that wait for
        each other were several times slower than one.

    Returns
    -------
    fastapi.FastAPI
        Serve it with uvicorn (``braintumor serve`` does), or test it with FastAPI's TestClient.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    max_upload = int(max_upload_mb * 1024 * 1024)
    max_volume = int(max_volume_mb * 1024 * 1024)
    predict_pool = InferencePool(workers, queue, "predict")
    explain_pool = InferencePool(1, explain_queue, "explain")
    explain_available = all(p.suffix != ".onnx" for p in predictor.paths)
    description = _model_description(predictor, max_upload, explain_available)
    page = {name: _page_file(name) for name in PAGE_FILES}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # one prediction before the first request: onnxruntime allocates its buffers on first use
        await predict_pool.run(predictor.runtime.run, _blank(predictor))
        yield
        predict_pool.shutdown()
        explain_pool.shutdown()

    app = FastAPI(
        title="braintumor",
        version=__version__,
        summary="Brain MRI slice classification: glioma, meningioma, no tumour or pituitary tumour.",
        description=f"**{NOTICE}**\n\nUpload one image per request (JPEG, PNG, BMP, TIFF or DICOM) as the "
                    "multipart field `file`. Every error has the body `{\"error\": {\"code\", \"message\", \"hint\"}}`.",
        lifespan=lifespan,
    )
    app.state.predict_pool, app.state.explain_pool = predict_pool, explain_pool
    app.add_middleware(UploadLimit, max_bytes=max_upload + MULTIPART_SLACK)
    app.add_middleware(RequestLog)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.hint, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        code = "upload_too_large" if exc.status_code == 413 else _status_code_name(exc.status_code)
        return error_response(exc.status_code, code, message, _HTTP_HINTS.get(exc.status_code), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:3]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
        return error_response(422, "invalid_request", "; ".join(problems) or "invalid request",
                              "see /docs for the parameters and the form field 'file'")

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception):
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal_error", "the server failed to answer this request",
                              "retry; if it keeps failing, the server's log has the details")

    async def read_upload(file: UploadFile) -> tuple[bytes, str]:
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            raise ApiError(413, "upload_too_large", f"the file is larger than {max_upload:,} bytes", _HTTP_HINTS[413])
        if not data:
            raise ApiError(422, "empty_file", "the file is empty (0 bytes)", "send the image's bytes")
        kind = sniff_format(data)
        if kind not in SERVED_TYPES:
            raise ApiError(415, "unsupported_media_type", "the content is not a JPEG, PNG, BMP, TIFF or DICOM image "
                           "or a NIfTI volume",
                           "send one of these types; the type is read from the bytes, not from the name")
        return data, ENCODED_TYPES[kind]

    async def in_pool(pool: InferencePool, function, *args):
        try:
            return await pool.run(function, *args)
        except Busy:
            raise ApiError(503, "busy", f"the server is busy: {pool.capacity} requests are being processed or queued",
                           "retry after the number of seconds in Retry-After", {"Retry-After": "1"}) from None
        except UnsupportedImageError as exc:
            raise ApiError(415, "unsupported_media_type", exc.message.split(": ", 1)[-1], exc.hint) from None
        except ImageError as exc:
            raise ApiError(422, "unreadable_image", exc.message.split(": ", 1)[-1], exc.hint) from None

    @app.get("/", include_in_schema=False)
    async def index():
        return Response(page["index.html"], media_type=PAGE_FILES["index.html"], headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in PAGE_FILES or name == "index.html":
            raise ApiError(404, "not_found", f"no page file {name!r}", _HTTP_HINTS[404])
        return Response(page[name], media_type=PAGE_FILES[name], headers=PAGE_HEADERS)

    @app.get("/healthz", response_model=schemas.Health, tags=["service"])
    async def healthz():
        """Whether the server answers, and how busy its inference pool is."""
        return {"status": "ok", "pending": predict_pool.pending, "capacity": predict_pool.capacity}

    @app.get("/v1/model", response_model=schemas.ModelResponse, tags=["model"])
    async def model_info():
        """The model served: classes, input size, version and checksum, headline figures, notice."""
        return description

    frame_query = Query(None, ge=1, le=100_000, description="Only this frame (from 1) of a multi-frame DICOM file.")
    file_field = File(description="The image: JPEG, PNG, BMP, TIFF or DICOM (the type is read from the content).")

    @app.post("/v1/predict", response_model=schemas.PredictResponse, responses=ERROR_RESPONSES, tags=["predict"])
    async def predict(file: UploadFile = file_field, frame: int | None = frame_query):
        """Classify one uploaded image: class, probabilities, the "not a brain MRI" decision, warnings."""
        start = time.perf_counter()
        data, media_type = await read_upload(file)
        name = _clean_name(file.filename)
        volume = None
        if media_type == ENCODED_TYPES["NIFTI"]:
            predictions, volume = await in_pool(predict_pool, memory.predict_volume_bytes, predictor, data, name, frame,
                                                max_volume)
        else:
            predictions = await in_pool(predict_pool, memory.predict_bytes, predictor, data, name, frame, max_frames)
        return {"filename": name, "media_type": media_type,
                "predictions": [_record(predictor, p) for p in predictions],
                "volume": None if volume is None else volume.to_dict(),
                "model_sha256": description["sha256"], "elapsed_ms": round(1000 * (time.perf_counter() - start), 2),
                "notice": NOTICE}

    explain_responses = {**ERROR_RESPONSES,
                         200: {"content": {"image/png": {}},
                               "description": "JSON, or with `Accept: image/png` the overlay of one image as PNG."},
                         501: {"model": schemas.ErrorBody, "description": "The model has no PyTorch network (.onnx files)."}}

    configured = []  # whether PyTorch's threads are set (in the explain thread, before its first use)

    def explain_job(data: bytes, name: str, frame: int | None, target: str | None, as_png: bool):
        """Explain in a worker thread, the PNGs encoded there too: the overlay's PNG bytes when
        `as_png`, else the JSON records."""
        if torch_threads and not configured:
            import torch

            torch.set_num_threads(torch_threads)
            configured.append(True)
        explained = memory.explain_bytes(predictor, data, name, frame, target, max_frames, max_volume)
        if as_png:
            if len(explained) != 1:
                raise ApiError(422, "several_frames", f"the file has {len(explained)} frames; a PNG shows one",
                               "choose one with the frame parameter, or ask for JSON")
            e = explained[0]
            return e, memory.png_bytes(memory.overlay(e.image, e.heatmap))
        return None, [{**_record(predictor, e.prediction), "explained_class": e.target, "image_png": _b64_png(e.image),
                       "heatmap_png": _b64_png(memory.heatmap_rgba(e.heatmap)),
                       "overlay_png": _b64_png(memory.overlay(e.image, e.heatmap))} for e in explained]

    @app.post("/v1/explain", response_model=schemas.ExplainResponse, responses=explain_responses, tags=["predict"])
    async def explain(request: Request, file: UploadFile = file_field, frame: int | None = frame_query,
                      target: str | None = Query(None, description="Explain this class instead of the predicted one.")):
        """`/v1/predict` plus the Grad-CAM heatmap: where in the image the evidence for the class lies.

        With `Accept: image/png` the answer is the heatmap laid over the image as the network sees
        it, as a PNG (the class in the header `X-Braintumor-Label`)."""
        start = time.perf_counter()
        if not explain_available:
            raise ApiError(501, "explain_unavailable", "this model has no PyTorch network for Grad-CAM (an .onnx file)",
                           "serve the .safetensors checkpoint instead")
        if target is not None and target not in predictor.classes:
            raise ApiError(422, "invalid_request", f"target: unknown class {target!r}",
                           "choose one of: " + ", ".join(predictor.classes))
        data, media_type = await read_upload(file)
        name = _clean_name(file.filename)
        if media_type == ENCODED_TYPES["NIFTI"] and frame is None:
            raise ApiError(422, "choose_slice", "a NIfTI volume: explain one slice at a time",
                           "add ?frame=N, e.g. one of the evidence_slices /v1/predict gives in its volume summary")
        as_png = _wants_png(request.headers.get("accept"))
        explained, answer = await in_pool(explain_pool, explain_job, data, name, frame, target, as_png)
        if as_png:
            return Response(answer, media_type="image/png",
                            headers={"X-Braintumor-Label": explained.prediction.label,
                                     "X-Braintumor-Explained-Class": explained.target})
        return {"filename": name, "media_type": media_type, "predictions": answer,
                "model_sha256": description["sha256"], "elapsed_ms": round(1000 * (time.perf_counter() - start), 2),
                "notice": NOTICE}

    return app


def _blank(predictor: Predictor):
    """One black input image for the warm-up prediction."""
    import numpy as np

    size = predictor.info.preprocess.image_size
    return np.zeros((1, size, size, 3), dtype=np.uint8)
