"""A bounded pool of inference threads: the event loop hands work over and never waits on it.

At most ``workers`` jobs run at once and ``queue`` more wait; a job offered beyond that is
refused at once (`Busy`, which the server answers with 503 and ``Retry-After``), so an overload
costs the server nothing and is never an unbounded pile-up of requests.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class InferencePool:
    """Worker threads with a bounded queue in front of them.

    Parameters
    ----------
    workers : int
        Threads that run jobs (onnxruntime, Pillow and NumPy release the GIL while they compute).
    queue : int
        Jobs that may wait for a free worker; more are refused with `Busy`.
    name : str
        Prefix of the threads' names.
    """

    def __init__(self, workers: int, queue: int, name: str = "inference"):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be at least 1 and queue at least 0, got {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def pending(self) -> int:
        """Jobs running or waiting now."""
        return self._taken

    def _take(self) -> bool:
        with self._lock:
            if self._taken >= self.capacity:
                return False
            self._taken += 1
            return True

    def _give_back(self, _future=None) -> None:
        with self._lock:
            self._taken -= 1

    async def run(self, function, *args):
        """Run ``function(*args)`` in a worker thread and return its result (or raise its error).

        Raises
        ------
        Busy
            When `capacity` jobs are already running or waiting. A job keeps its place until it
            has finished, even when the awaiting request is cancelled (the client went away).
        """
        if not self._take():
            raise Busy
        try:
            future = self._executor.submit(function, *args)
        except BaseException:
            self._give_back()
            raise
        future.add_done_callback(self._give_back)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop the threads after their current jobs; waiting jobs are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
