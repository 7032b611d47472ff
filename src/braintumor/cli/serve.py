"""``braintumor serve``: the web page and the HTTP API (FastAPI on uvicorn), the model loaded once."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

from braintumor.errors import BrainTumorError

DEFAULTS = {"host": "127.0.0.1", "port": "8000", "queue": "16", "max_upload_mb": "20"}


def register(sub) -> None:
    """Add the ``serve`` subcommand to the top-level subparsers `sub`."""
    p = sub.add_parser(
        "serve",
        help="serve a web page and an HTTP API: drop an MRI slice, see the class, the probabilities and the heatmap",
        description="Serve the page at / and the HTTP API (POST /v1/predict, POST /v1/explain, GET /v1/model, "
                    "GET /healthz, /openapi.json, /docs) until Ctrl+C. Research use only, not a medical device.",
    )
    p.add_argument("-m", "--model", action="extend", nargs="+", metavar="PATH",
                   help="a checkpoint (.safetensors), an exported .onnx (no heatmaps), or 'default' for the model "
                        "shipped with braintumor (the default). Given several times (or -m A B), an ensemble.")
    p.add_argument("--host", default=DEFAULTS["host"],
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the "
                        "server, which has no authentication, to the network)")
    p.add_argument("--port", default=DEFAULTS["port"], help="TCP port, 1..65535 (default: 8000)")
    p.add_argument("--workers", help="inference threads: predictions that run at once (default: the cores, at most 4)")
    p.add_argument("--threads", help="CPU threads of each prediction (default: 1, so that the workers share the cores)")
    p.add_argument("--queue", default=DEFAULTS["queue"],
                   help="predictions that may wait for a worker; beyond them the answer is 503 with Retry-After "
                        "(default: 16)")
    p.add_argument("--max-upload-mb", default=DEFAULTS["max_upload_mb"],
                   help="largest file accepted, in MiB; larger uploads get 413 (default: 20)")
    p.add_argument("-q", "--quiet", action="store_true", help="no log line per request")
    p.set_defaults(func=run)


def _number(option: str, text: str, kind: type, low: float, high: float, hint: str):
    """`text` as an int or float in ``[low, high]``, else a `BrainTumorError` naming `option`."""
    words = f"an integer in {low}..{high}" if kind is int else f"a number above {low} and at most {high}"
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise BrainTumorError(f"{option} must be {words}, got {text!r}", hint) from None
    if not (low <= value <= high) or (kind is float and (value <= low or value != value)):
        raise BrainTumorError(f"{option} must be {words}, got {text!r}", hint)
    return value


def options(args) -> dict:
    """The checked option values of a ``serve`` command line."""
    cores = os.cpu_count() or 1
    host = (args.host or "").strip()
    if not host or any(ch.isspace() for ch in host):
        raise BrainTumorError(f"--host must be an address or host name, got {args.host!r}",
                              "use 127.0.0.1 for this machine only, or 0.0.0.0 for every interface")
    workers = args.workers and _number("--workers", args.workers, int, 1, 64,
                                       f"this machine has {cores} cores; leave --workers out to use them")
    return {
        "host": host,
        "port": _number("--port", args.port, int, 1, 65535, "choose a free port such as 8000 or 8080"),
        "workers": workers or min(4, cores),
        "threads": _number("--threads", args.threads, int, 1, 1024, f"this machine has {cores} cores")
        if args.threads else 1,
        "queue": _number("--queue", args.queue, int, 0, 100_000, "0 answers 503 as soon as every worker is busy"),
        "max_upload_mb": _number("--max-upload-mb", args.max_upload_mb, float, 0, 1024,
                                 "a brain MRI slice is well under 20 MiB, even as DICOM"),
        "models": _models(args.model),
    }


def _models(given: list[str] | None) -> list[Path] | None:
    """The model files: 'default' is the shipped model; each must exist."""
    from braintumor.inference.predictor import DEFAULT_MODEL

    if not given:
        return None
    paths = [DEFAULT_MODEL if m == "default" and not Path(m).exists() else Path(m) for m in given]
    for path in paths:
        if not str(path).strip() or not path.is_file():
            raise BrainTumorError(f"model not found: {path}",
                                  "pass -m PATH to a .safetensors checkpoint or an exported .onnx, or -m default")
    return paths


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
    opts = options(args)
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

    sock = _listen(opts["host"], opts["port"])
    predictor = Predictor(opts["models"], threads=opts["threads"], progress=not args.quiet)
    app = create_app(predictor, workers=opts["workers"], queue=opts["queue"], max_upload_mb=opts["max_upload_mb"],
                     torch_threads=None if args.threads is None else opts["threads"])
    host = sock.getsockname()[0]
    shown = f"[{host}]" if ":" in host else host
    print(f"braintumor serve: http://{shown}:{opts['port']}/ ({' + '.join(p.name for p in predictor.paths)}, "
          f"{opts['workers']} workers; Ctrl+C stops)", file=sys.stderr)
    if not _is_loopback(host):
        print("warning: the server listens beyond this machine and has no authentication: anyone who can reach "
              "this port can use it", file=sys.stderr)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
