"""Data-parallel training across processes started by ``torchrun``: which process this is, and
the few collective steps the trainer and the prediction loop take.

``torchrun --nproc-per-node=N -m braintumor train ...`` (or ``braintumor train --nproc N``) starts
N copies of the same command; each reads its place in the job from the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Inside `process_group` they form one group:

- every rank reads the data and draws the split itself (the same seed gives the same split;
  `check_same` stops a job whose ranks see different data);
- each global batch is cut into micro-batches shared out among the ranks, whose gradients,
  batch-norm statistics and losses are summed over the ranks in one `all_reduce_sum` per step;
- predictions (validation, calibration, the test split) are cut into one contiguous shard per
  rank and gathered back in order (`map_shards`): every image counted once, whatever N;
- decisions that depend on the clock (the time limit) are rank 0's, sent to all (`broadcast`);
- only rank 0 writes files (`braintumor.files.set_writes`) and shows progress.

With one process (no ``WORLD_SIZE`` above 1) every function here is a no-op on a single rank,
so the trainer has one code path.

A rank that fails ends its process with its error; torchrun then stops the others. A rank whose
peer died while they were exchanging tensors gets `PeerLost` rather than a traceback, and no
exchange waits longer than `TIMEOUT`.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from braintumor import files
from braintumor.errors import BrainTumorError

# How long a collective waits for the slowest rank before the job fails. Long enough for one
# rank to decode the images while another has finished (the first collective comes after).
TIMEOUT = timedelta(minutes=30)


class PeerLost(BrainTumorError):
    """Another rank of the job stopped while this one waited for it."""


def world_size() -> int:
    """How many processes train together (1 outside a data-parallel job)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's place in the job, from 0 (0 outside a data-parallel job)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the files and shows progress (rank 0)."""
    return rank() == 0


def local_rank() -> int:
    """This process's place on its own machine (torchrun's ``LOCAL_RANK``): its GPU's number."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_world_size() -> int:
    """The ``WORLD_SIZE`` torchrun set for this process (1 when not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise BrainTumorError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number",
                              "start data-parallel runs with torchrun, which sets it") from None


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: in a job of several processes on CUDA GPUs, the GPU of
    its ``LOCAL_RANK`` (one process per GPU); otherwise `device` as it is."""
    if launched_world_size() < 2 or device.type != "cuda":
        return device
    if local_rank() >= torch.cuda.device_count():
        raise BrainTumorError(f"rank {os.environ.get('RANK', '?')} has LOCAL_RANK {local_rank()}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s)", "start at most one process per GPU on each machine")
    torch.cuda.set_device(local_rank())
    return torch.device("cuda", local_rank())


@contextmanager
def process_group(device: torch.device):
    """Join the job's process group inside the block, if torchrun started this process as one
    of several; otherwise (or when a group is already up) do nothing.

    The backend is ``nccl`` for CUDA devices and ``gloo`` otherwise. Ranks other than 0 write no
    files while in the group.
    """
    if launched_world_size() < 2 or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if backend == "nccl" else {}))
    except (RuntimeError, ValueError) as exc:
        raise BrainTumorError(f"could not join the data-parallel job: {exc}",
                              "start it with torchrun (or braintumor train --nproc N); on several machines give each "
                              "the same --rdzv-endpoint HOST:PORT that the first one can listen on") from None
    files.set_writes(dist.get_rank() == 0)
    try:
        yield
    finally:
        files.set_writes(True)
        dist.destroy_process_group()


@contextmanager
def _exchange(what: str):
    """Turn the error of a collective whose peer has gone into `PeerLost`."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as exc:
        why = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).splitlines()[0]).split(". ")[0][:160]  # (without gloo's source line)
        raise PeerLost(f"rank {rank()} lost the other ranks while {what}: {why}",
                       "another rank failed or was stopped: its own error, shown above or in its log, says why") from None


def all_reduce_sum(tensor: torch.Tensor, what: str = "summing gradients") -> torch.Tensor:
    """Sum `tensor` over the ranks, in place (returned)."""
    if world_size() > 1:
        with _exchange(what):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(value, what: str = "receiving rank 0's decision"):
    """Rank 0's `value` (a picklable object made by this package), on every rank. (Objects are
    pickled between the processes of one job, which trust each other as torch.distributed
    assumes; never to or from a file.)"""
    if world_size() < 2:
        return value
    box = [value]
    with _exchange(what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, what: str = "gathering results") -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() < 2:
        return [value]
    out = [None] * world_size()
    with _exchange(what):
        dist.all_gather_object(out, value)
    return out


def barrier(what: str) -> None:
    """Wait until every rank has come here."""
    gather(None, what)


def check_same(value, what: str) -> None:
    """Raise a `BrainTumorError` on every rank if the ranks' `value` differ (e.g. the data's
    fingerprint: the ranks of a job on several machines must read the same images)."""
    values = gather(value, f"comparing {what}")
    if any(v != values[0] for v in values):
        raise BrainTumorError(f"the ranks of this job see different {what}",
                              "give every machine the same --data, with the same images, and the same options")


def shard(n: int) -> slice:
    """This rank's contiguous share of `n` items (the first ranks take one more when `n` does not
    divide evenly)."""
    size, rest = divmod(n, world_size())
    start = rank() * size + min(rank(), rest)
    return slice(start, start + size + (rank() < rest))


def map_shards(fn, items: np.ndarray):
    """``fn(items)``, computed in shards: each rank applies `fn` to its `shard` of `items` and
    the results (arrays, or tuples of arrays, one row per item) are joined in order on every rank."""
    if world_size() < 2:
        return fn(items)
    parts = gather(fn(items[shard(len(items))]), "gathering predictions")
    if isinstance(parts[0], tuple):
        return tuple(_join([part[i] for part in parts]) for i in range(len(parts[0])))
    return _join(parts)


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate the ranks' rows; an empty shard (fewer items than ranks) may lack the others'
    shape."""
    rows = [a for a in arrays if len(a)]
    return np.concatenate(rows) if rows else arrays[0]


def launch(nproc: int, argv: list[str], entry: tuple[str, ...] = ("-m", "braintumor")) -> int:
    """Run ``braintumor ARGV`` as a data-parallel job of `nproc` processes on this machine, as
    ``torchrun --standalone --nproc-per-node NPROC -m braintumor ARGV`` does; returns its exit
    code (that of the first rank to fail: its own error is printed by it).

    On a CPU the processes share its cores (``OMP_NUM_THREADS``, unless set, is the cores
    divided among them).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)(*entry, *argv)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
