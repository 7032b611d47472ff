"""Load on ``braintumor serve`` over loopback: throughput, latency, memory, overload and cold start.

Everything runs on this machine: the server in its own process, the clients as threads of this
one (each with one keep-alive connection, posting real-sized JPEG slices), so on a 2-core machine
the clients take part of the cores too. Phases, each bounded in time and in requests:

1. ``cold_start``: from starting ``braintumor serve`` to the first answer of ``POST /v1/predict``,
   with the model's ONNX graph already cached (``--cold-starts`` times); whether the server had
   loaded PyTorch by then (``/proc/PID/maps``).
2. ``predict``: after ``--warmup-seconds`` of the same load, unrecorded (the server's first
   allocations at full concurrency), ``--clients`` clients for ``--seconds`` on ``/v1/predict``: throughput,
   p50/p95/p99 latency, answers by status, the server's resident memory every 0.5 s, its peak,
   and how flat it stays (mean of the last 10 s over the first 10 s).
3. ``explain``: the same on ``/v1/explain`` (Grad-CAM, one at a time; after a warm-up request
   that loads PyTorch).
4. ``overload``: ``--overload-clients`` clients for ``--overload-seconds`` on ``/v1/predict``,
   without back-off: answers by status (only 200 and 503 are expected), timeouts, ``/healthz``
   polled every 0.1 s throughout, and the latency of the first requests after the overload.

Targets (issue 39, 2 cores): predict >= 60 requests/s, p95 <= 250 ms, no error, memory within 5%;
overload only 200/503, no timeout, /healthz answered throughout, recovery at once; cold start
<= 5 s.

Usage: python benchmarks/serve_load.py [-m MODEL] [--clients 8] [--seconds 30] [--workers N]
       [--threads N] [--output serve_load.json]
Images: the JPEGs of ``$BRAINTUMOR_DATA/Testing`` (default ../shared/data/sartaj), read only;
generated 512 x 512 slices if there are none. Writes benchmarks/results/serve_load.json (or NAME).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

BOUNDARY = "braintumorbenchmark"
REQUEST_TIMEOUT_S = 30


def slices(folder: Path, count: int) -> tuple[list[bytes], str]:
    """Up to `count` JPEG slices of `folder` (recursively), else generated 512 x 512 ones."""
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")) if folder.is_dir() else []
    if found:
        step = max(1, len(found) // count)
        return [p.read_bytes() for p in found[::step][:count]], f"{len(found[::step][:count])} JPEGs of {folder}"
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    yy, xx = np.mgrid[:512, :512]
    for _ in range(count):
        head = ((yy - 256) ** 2 / 200**2 + (xx - 256) ** 2 / 170**2) < 1
        gray = np.where(head, 90 + rng.normal(0, 25, head.shape), rng.normal(4, 2, head.shape))
        cy, cx = rng.integers(170, 340, 2)
        gray[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(15, 40) ** 2] = 230
        buffer = io.BytesIO()
        Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images, f"{count} generated 512x512 JPEG slices (no dataset at {folder})"


def multipart(data: bytes, name: str = "slice.jpg") -> bytes:
    """A multipart/form-data body with `data` as the field ``file``."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int):
        self.port = port
        self.connection = None

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, bytes, dict]:
        """``(status, body, headers)``; status 0 for a connection error, -1 for a timeout."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"} if body is not None else {}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            content = response.read()
            if response.getheader("connection", "").lower() == "close":
                self.close()
            return response.status, content, dict(response.getheaders())
        except socket.timeout:
            self.close()
            return -1, b"", {}
        except (OSError, http.client.HTTPException):
            self.close()
            return 0, b"", {}

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def rss_mb(pid: int, key: str = "VmRSS") -> float | None:
    """Resident memory of process `pid` in MB (``VmHWM``: its peak), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def torch_loaded(pid: int) -> bool:
    """Whether process `pid` has PyTorch's library mapped."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``braintumor serve`` in a child process."""

    def __init__(self, command_options: list[str], log: Path):
        self.port = free_port()
        self.log = open(log, "a")
        command = [sys.executable, "-m", "braintumor", "serve", "--port", str(self.port), *command_options]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def first_answer(self, body: bytes, limit_s: float = 120) -> float:
        """Seconds from the start to the first 200 of ``POST /v1/predict``."""
        client = Client(self.port)
        while time.perf_counter() - self.started < limit_s:
            if self.process.poll() is not None:
                raise SystemExit(f"braintumor serve exited with {self.process.returncode}; see {self.log.name}")
            status, _, _ = client.request("POST", "/v1/predict", body, timeout=limit_s)
            if status == 200:
                client.close()
                return time.perf_counter() - self.started
            time.sleep(0.01)
        raise SystemExit(f"braintumor serve did not answer within {limit_s} s; see {self.log.name}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def load(port: int, pid: int, path: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int,
         backoff: bool = False, health: bool = False) -> dict:
    """`clients` threads posting `bodies` in turn to `path` for `seconds` (or `max_requests` in
    all); the server's memory sampled every 0.5 s, and ``/healthz`` every 0.1 s if `health`."""
    records: list[tuple[float, float, int]] = []  # (start offset s, latency s, status)
    lock = threading.Lock()
    stop = threading.Event()
    start = time.perf_counter()
    deadline = start + seconds

    def client_loop(index: int):
        client = Client(port)
        turn = index
        while not stop.is_set() and time.perf_counter() < deadline:
            body = bodies[turn % len(bodies)]
            turn += clients
            sent = time.perf_counter()
            status, _, headers = client.request("POST", path, body)
            done = time.perf_counter()
            with lock:
                records.append((sent - start, done - sent, status))
                if len(records) >= max_requests:
                    stop.set()
            if backoff and status == 503:
                time.sleep(float(headers.get("retry-after", headers.get("Retry-After", 1))))
        client.close()

    memory: list[tuple[float, float]] = []

    def sample_memory():
        while not stop.is_set() and time.perf_counter() < deadline:
            value = rss_mb(pid)
            if value is not None:
                memory.append((time.perf_counter() - start, value))
            time.sleep(0.5)

    probes: list[tuple[float, float, int]] = []

    def probe_health():
        client = Client(port)
        while not stop.is_set() and time.perf_counter() < deadline:
            sent = time.perf_counter()
            status, _, _ = client.request("GET", "/healthz", timeout=5)
            probes.append((sent - start, time.perf_counter() - sent, status))
            time.sleep(0.1)
        client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=sample_memory))
    if health:
        threads.append(threading.Thread(target=probe_health))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT_S + 10)
    elapsed = time.perf_counter() - start
    statuses = {}
    for _, _, status in records:
        name = {0: "connection_error", -1: "timeout"}.get(status, str(status))
        statuses[name] = statuses.get(name, 0) + 1
    ok = [latency * 1000 for _, latency, status in records if status == 200]
    result = {
        "path": path, "clients": clients, "seconds": round(elapsed, 2), "requests": len(records),
        "statuses": statuses, "ok": len(ok), "errors": len(records) - len(ok),
        "throughput_ok_per_s": round(len(ok) / elapsed, 2),
        "latency_ms_ok": {"p50": _round(percentile(ok, 50)), "p95": _round(percentile(ok, 95)),
                          "p99": _round(percentile(ok, 99)), "max": _round(max(ok) if ok else None)},
    }
    if memory:
        first = [v for t, v in memory if t <= 10]
        last = [v for t, v in memory if t >= elapsed - 10]
        result["rss_mb"] = {"start": round(memory[0][1], 1), "end": round(memory[-1][1], 1),
                            "max_sampled": round(max(v for _, v in memory), 1),
                            "mean_first_10s": _round(statistics.mean(first) if first else None, 1),
                            "mean_last_10s": _round(statistics.mean(last) if last else None, 1)}
        if first and last:
            result["rss_mb"]["last_over_first"] = round(statistics.mean(last) / statistics.mean(first), 4)
        result["rss_mb"]["samples"] = [[round(t, 1), round(v, 1)] for t, v in memory]
    if health:
        answered = [latency * 1000 for _, latency, status in probes if status == 200]
        result["healthz"] = {"probes": len(probes), "answered_200": len(answered),
                             "failed": len(probes) - len(answered),
                             "latency_ms": {"p50": _round(percentile(answered, 50)), "max": _round(max(answered) if answered else None)}}
    return result


def _round(value, digits: int = 1):
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", help="model given to braintumor serve (default: the shipped model)")
    parser.add_argument("--data", default=os.environ.get("BRAINTUMOR_DATA", "../shared/data/sartaj"),
                        help="dataset whose Testing folder gives the JPEGs (default: $BRAINTUMOR_DATA, else ../shared/data/sartaj)")
    parser.add_argument("--images", type=int, default=64, help="distinct slices posted in turn (default: 64)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-requests", type=int, default=20_000, help="stop a phase after this many requests")
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-seconds", type=float, default=15)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--warmup-seconds", type=float, default=5,
                        help="unrecorded load before the predict and explain phases (default: 5)")
    parser.add_argument("--workers", help="braintumor serve --workers (default: its own)")
    parser.add_argument("--threads", help="braintumor serve --threads (default: its own)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["cold_start", "predict", "explain", "overload"])
    parser.add_argument("--output", default="serve_load.json", help="results file name in benchmarks/results/")
    args = parser.parse_args()

    images, source = slices(Path(args.data) / "Testing", args.images)
    bodies = [multipart(image) for image in images]
    options = (["-m", args.model] if args.model else []) + (["--workers", args.workers] if args.workers else []) \
        + (["--threads", args.threads] if args.threads else [])
    log = Path(__file__).parent / "results" / "tmp" / "serve_load.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    results = {"images": source, "image_bytes_median": int(statistics.median(len(i) for i in images)),
               "serve_options": options, "load_average_before": os.getloadavg()}
    print(f"images: {source}; server options: {options or 'defaults'}")

    # the ONNX graph cached before any timing (exported with PyTorch on a first use)
    subprocess.run([sys.executable, "-c", "import sys; from braintumor.inference import Predictor; "
                    "Predictor(sys.argv[1] if len(sys.argv) > 1 else None)", *([args.model] if args.model else [])],
                   check=True)

    starts = []
    server = None
    for repeat in range(max(1, args.cold_starts) if "cold_start" not in args.skip else 1):
        if server is not None:
            server.stop()
        server = Server(options, log)
        seconds = server.first_answer(bodies[0])
        starts.append({"seconds": round(seconds, 3), "torch_loaded": torch_loaded(server.process.pid),
                       "rss_mb": _round(rss_mb(server.process.pid), 1)})
        print(f"cold start {repeat + 1}: first answer after {seconds:.2f} s (torch loaded: {starts[-1]['torch_loaded']})")
    if "cold_start" not in args.skip:
        results["cold_start"] = {"seconds_median": round(statistics.median(s["seconds"] for s in starts), 3),
                                 "runs": starts, "target_s": 5.0}
    pid = server.process.pid
    try:
        if "predict" not in args.skip:
            # warm-up at full concurrency (onnxruntime's buffers, every thread's first allocations), unrecorded
            load(server.port, pid, "/v1/predict", bodies, args.clients, args.warmup_seconds, args.max_requests)
            result = load(server.port, pid, "/v1/predict", bodies, args.clients, args.seconds, args.max_requests)
            result["target"] = {"throughput_ok_per_s": 60, "p95_ms": 250, "errors": 0, "rss_last_over_first_max": 1.05}
            results["predict"] = result
            print(f"predict: {result['throughput_ok_per_s']} req/s, p50/p95/p99 {result['latency_ms_ok']['p50']}/"
                  f"{result['latency_ms_ok']['p95']}/{result['latency_ms_ok']['p99']} ms, statuses {result['statuses']}, "
                  f"RSS first/last 10 s {result['rss_mb']['mean_first_10s']}/{result['rss_mb']['mean_last_10s']} MB")
        if "explain" not in args.skip:
            warm = time.perf_counter()
            status, _, _ = Client(server.port).request("POST", "/v1/explain", bodies[0], timeout=120)
            first_explain = time.perf_counter() - warm
            load(server.port, pid, "/v1/explain", bodies, args.clients, args.warmup_seconds, args.max_requests)
            result = load(server.port, pid, "/v1/explain", bodies, args.clients, args.seconds, args.max_requests)
            result["first_request_s"] = round(first_explain, 2)
            result["first_request_status"] = status
            results["explain"] = result
            print(f"explain: first request {first_explain:.1f} s (loads PyTorch); {result['throughput_ok_per_s']} req/s, "
                  f"p50/p95/p99 {result['latency_ms_ok']['p50']}/{result['latency_ms_ok']['p95']}/"
                  f"{result['latency_ms_ok']['p99']} ms, statuses {result['statuses']}")
        if "overload" not in args.skip:
            result = load(server.port, pid, "/v1/predict", bodies, args.overload_clients, args.overload_seconds,
                          args.max_requests, health=True)
            after = []
            for body in bodies[:5]:
                sent = time.perf_counter()
                status, _, _ = Client(server.port).request("POST", "/v1/predict", body)
                after.append({"status": status, "ms": round(1000 * (time.perf_counter() - sent), 1)})
            result["after"] = after
            result["only_200_and_503"] = set(result["statuses"]) <= {"200", "503"}
            results["overload"] = result
            print(f"overload: statuses {result['statuses']}, healthz {result['healthz']}, after {after}")
        results["peak_rss_mb"] = _round(rss_mb(pid, "VmHWM"), 1)
        results["torch_loaded_at_end"] = torch_loaded(pid)
    finally:
        server.stop()
    results["load_average_after"] = os.getloadavg()
    results["machine"] = machine()
    results["command"] = " ".join(["benchmarks/serve_load.py", *sys.argv[1:]])
    path = write(args.output, results)
    print(f"peak RSS {results['peak_rss_mb']} MB; wrote {path}")


if __name__ == "__main__":
    main()
