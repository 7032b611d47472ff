"""``braintumor serve``: the web page and the HTTP API (FastAPI on uvicorn), the model loaded once."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

from braintumor.cli.common import add_command, add_device, add_model, models_of
from braintumor.errors import BrainTumorError
from braintumor.options import cli_type


def register(sub) -> None:
    """Add the ``serve`` subcommand to the top-level subparsers `sub`."""
    p = add_command(sub, "serve", "serve a web page and an HTTP API: drop an MRI slice, see the class, the "
                                  "probabilities and the heatmap (until Ctrl+C)", quiet=False)
    p.description = ("Serve the page at / and the HTTP API (POST /v1/predict, POST /v1/explain, GET /v1/model, "
                     "GET /healthz, /openapi.json, /docs) until Ctrl+C. Research use only, not a medical device.")
    add_model(p, "Default: the model shipped with braintumor. An exported .onnx model predicts but gives no heatmaps.")
    p.add_argument("--host", type=cli_type("host"), default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the server, "
                        "which has no authentication, to the network)")
    p.add_argument("--port", type=cli_type("port"), default=8000, help="TCP port, 1..65535 (default: 8000)")
    p.add_argument("--workers", type=cli_type("workers"),
                   help="inference threads: predictions that run at once, 1..64 (default: the cores, at most 4)")
    p.add_argument("--threads", type=cli_type("threads"),
                   help="CPU threads of each prediction and explanation (default: 1, so that the workers share the cores)")
    p.add_argument("--queue", type=cli_type("queue"), default=16,
                   help="predictions that may wait for a worker, 0..100000; beyond them the answer is 503 with "
                        "Retry-After (default: 16)")
    p.add_argument("--max-upload-mb", type=cli_type("max_upload_mb"), default=20.0,
                   help="largest file accepted, in MiB, above 0 and at most 1024; larger uploads get 413 (default: 20)")
    p.add_argument("--max-volume-mb", type=cli_type("max_volume_mb"), default=256.0,
                   help="largest NIfTI volume accepted once unpacked, in MiB, above 0 and at most 4096; larger "
                        "volumes get 422 (default: 256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no log line per request")
    add_device(p)
    p.set_defaults(func=run)


def _models(args) -> list[Path] | None:
    """The model files (None: the shipped model); each must exist."""
    given = models_of(args, required=False)
    for model in given:
        if not Path(model).is_file():
            raise BrainTumorError(f"model not found: {model}",
                                  "pass -m PATH to a .safetensors checkpoint or an exported .onnx, or -m default")
    return [Path(m) for m in given] or None


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a `BrainTumorError` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise BrainTumorError(f"--host {host!r} is not an address of this machine ({reason})",
                              "use 127.0.0.1 for this machine only, or 0.0.0.0 for every interface") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        hints = {errno.EADDRINUSE: "choose another --port, or stop the program that uses this one",
                 errno.EACCES: "ports below 1024 need special rights: choose --port 8000 or above",
                 errno.EADDRNOTAVAIL: "--host must be an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"}
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BrainTumorError(f"cannot listen on {host}:{port} ({reason})",
                              hints.get(exc.errno, "choose another --host or --port")) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    models = _models(args)
    host = args.host.strip()
    workers = args.workers or min(4, os.cpu_count() or 1)
    try:
        import uvicorn

        from braintumor.serve import create_app
    except ImportError as exc:
        raise BrainTumorError(f"braintumor serve needs the package {exc.name}",
                              "pip install fastapi uvicorn python-multipart") from None
    from braintumor.inference import Predictor

    logger = logging.getLogger("braintumor.serve")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False

    sock = _listen(host, args.port)
    predictor = Predictor(models, threads=args.threads or 1, progress=not args.quiet, device=args.device or "auto")
    if predictor.device_note:
        print(predictor.device_note, file=sys.stderr)
    app = create_app(predictor, workers=workers, queue=args.queue, max_upload_mb=args.max_upload_mb,
                     max_volume_mb=args.max_volume_mb, torch_threads=args.threads or 1)
    host = sock.getsockname()[0]
    shown = f"[{host}]" if ":" in host else host
    print(f"braintumor serve: http://{shown}:{args.port}/ ({' + '.join(p.name for p in predictor.paths)}, "
          f"{workers} workers; Ctrl+C stops)", file=sys.stderr)
    if not _is_loopback(host):
        print("warning: the server listens beyond this machine and has no authentication: anyone who can reach "
              "this port can use it", file=sys.stderr)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
