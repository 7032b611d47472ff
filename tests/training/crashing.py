"""A driver for kill tests: runs training runs in child processes that SIGKILL themselves at
chosen points (run as ``python crashing.py``; not a test module).

PyTorch and braintumor are imported once, here; each run is a child forked from this process
(which never computes with PyTorch itself, so forking is safe), so that twenty runs do not
cost twenty imports.

Protocol, one JSON object per line: the test writes ``{"config": {...}, "points": [...],
"log": PATH}``; the driver answers ``{"pid": P}`` once the child is forked and ``{"signal": S,
"code": C}`` when it has ended (``signal`` 9: it was killed). The child trains
``TrainConfig(**config)`` and kills itself with SIGKILL at the first of `points` it reaches,
after appending that point to the file `log`. A point is one of:

- ``["write", NAME, N, "partial"]``: during the N-th write of file NAME by this process, after
  half of its bytes are on the disk (in the temporary file);
- ``["write", NAME, N, "after"]``: right after the N-th write of NAME is in place;
- ``["step", N]``: at the N-th training step of this process, before it;
- ``["posthoc"]``: when the fits after training start;
- ``["wait", N, PATH]``: not a kill: at step N, wait until file PATH exists (to hold the run
  folder's lock while a test tries a second run).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import braintumor.training.trainer as trainer
from braintumor import files
from braintumor.errors import BrainTumorError
from braintumor.training.trainer import TrainConfig, train


def _die(point, log: str) -> None:
    with open(log, "a") as f:
        f.write(json.dumps(point) + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(points: list, log: str) -> None:
    """Patch the trainer and braintumor.files so that the child dies at the first of `points`."""
    writes: dict[str, int] = {}
    steps = [0]
    write_points = [p for p in points if p[0] == "write"]
    step_points = [p for p in points if p[0] in ("step", "wait")]
    real_write, real_loss, real_posthoc = files.atomic_write, trainer.batch_loss, trainer.fit_posthoc

    def atomic_write(path, write):
        name = Path(path).name
        writes[name] = writes.get(name, 0) + 1
        for point in write_points:
            _, target, n, phase = point
            if target != name or n != writes[name]:
                continue
            if phase == "partial":
                def half(handle, write=write, point=point):
                    buffer = io.BytesIO()
                    write(buffer)
                    data = buffer.getvalue()
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    _die(point, log)

                return real_write(path, half)
            result = real_write(path, write)
            _die(point, log)
            return result
        return real_write(path, write)

    def batch_loss(*args, **kwargs):
        steps[0] += 1
        for point in step_points:
            if point[1] == steps[0]:
                if point[0] == "wait":
                    while not os.path.exists(point[2]):
                        time.sleep(0.05)
                else:
                    _die(point, log)
        return real_loss(*args, **kwargs)

    def fit_posthoc(*args, **kwargs):
        if ["posthoc"] in points:
            _die(["posthoc"], log)
        return real_posthoc(*args, **kwargs)

    files.atomic_write = atomic_write
    trainer.batch_loss = batch_loss
    trainer.fit_posthoc = fit_posthoc


def _child(request: dict) -> int:
    _arm(request.get("points", []), request.get("log", os.devnull))
    try:
        train(TrainConfig(**request["config"]))
    except BrainTumorError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except BaseException:  # noqa: BLE001 - reported to the test through the exit code
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                          "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)


if __name__ == "__main__":
    print(json.dumps({"ready": True}), flush=True)
    main()
