"""Where the network runs (``--device``), and the mixed precision that goes with it.

``auto`` picks a CUDA GPU, then Apple's MPS, then the CPU. Mixed precision (``bf16``, on by
default) is taken where the hardware does it natively, and float32 kept elsewhere:

- a CPU with bfloat16 instructions (AVX-512 BF16 or AMX: recent Xeons and EPYCs): bfloat16
  autocast. A CPU without them (AVX2 only: most laptops, older servers) emulates bfloat16, and a
  training step of Lite0 at 160 px was 7.1 times *slower* in the old mixed precision than in
  float32 on such an AMD EPYC (2 cores; ``benchmarks/results/train_step_speed_avx2.json``),
  so there it trains in float32;
- a GPU: bfloat16 where it supports it (Ampere and later), float16 with a gradient scaler
  otherwise; the network and its batches live on the device in the channels-last layout.

Examples
--------
>>> resolve_device("cpu")
device(type='cpu')
>>> autocast_dtype(resolve_device("cpu"), mixed=False) is None
True
"""

from __future__ import annotations

import contextlib
import os

import torch

from braintumor.errors import BrainTumorError

_HINT = "use --device cpu, or --device auto to take a GPU when there is one"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The `torch.device` named by `name` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Raises
    ------
    BrainTumorError
        When the device named is not one, or is not there (no CUDA GPU, GPU N missing, no MPS).
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BrainTumorError(f"--device {name!r} is not a device", "name one of auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BrainTumorError(f"--device {name}: PyTorch sees no CUDA GPU on this machine", _HINT)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise BrainTumorError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                  f"numbered 0..{torch.cuda.device_count() - 1}", "name one of them, e.g. --device cuda:0")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise BrainTumorError(f"--device {name}: Apple's MPS is not available on this machine", _HINT)
        return device
    raise BrainTumorError(f"--device {name!r}: braintumor runs on cpu, cuda or mps", "name one of auto, cpu, cuda, cuda:N, mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe(device: torch.device) -> str:
    """The device in words, for logs and reports: ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (2 cores)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    return str(device)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), not by emulation."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    return False


def autocast_dtype(device: torch.device, mixed: bool) -> torch.dtype | None:
    """The autocast type of mixed precision on `device` (None: float32 throughout).

    bfloat16 on a CPU that has bfloat16 instructions (`cpu_has_bfloat16`; float32 on others,
    where emulated bfloat16 is several times slower) and on GPUs that support it; float16 on
    other GPUs and on MPS, which then needs a gradient scaler (`grad_scaler`).
    """
    if not mixed:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_bfloat16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on `device` in `dtype`, or a no-op for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, on only for float16 (whose small gradients would underflow)."""
    return torch.amp.GradScaler(device.type if device.type in ("cuda", "cpu") else "cuda",
                                enabled=dtype == torch.float16 and device.type == "cuda")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` (asynchronously from pinned memory on a GPU); unchanged on its own device."""
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=device.type == "cuda")
