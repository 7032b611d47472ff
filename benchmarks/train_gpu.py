"""Training throughput on a device: the step (forward, backward, AdamW) in each precision, and
the CPU side that feeds it (indexing, resizing and augmenting batches as `train` does).

Issue 40's GPU targets: Lite0 at 224 px, bfloat16, channels-last, at least 1,500 training
images/s on one H100-class GPU with the loader keeping up; and the speed-up of bfloat16 over
float32. Runs on a CPU too (``--device cpu``), where it measures the same two rates.

The images are generated (random uint8 slices): the step's speed does not depend on their
content, and the benchmark needs no dataset on the GPU machine.

Usage: python benchmarks/train_gpu.py [--device auto] [--image-size 224] [--batch-size 128]
           [--steps 30] [--compile] [--output NAME]
Writes benchmarks/results/train_gpu.json (or NAME), with the device's name.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

from braintumor.data.preprocess import Preprocess  # noqa: E402
from braintumor.model.device import autocast, autocast_dtype, describe, grad_scaler, resolve_device  # noqa: E402
from braintumor.model.factory import create_model  # noqa: E402
from braintumor.training import TrainConfig  # noqa: E402
from braintumor.training.trainer import make_batch  # noqa: E402


class _Data:
    """What `make_batch` reads: uint8 images and labels as tensors."""

    def __init__(self, n: int, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images_t = torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        self.labels_t = torch.from_numpy(rng.integers(0, 4, n).astype(np.int64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(device: torch.device, size: int, batch: int, steps: int, mixed: bool, compile: bool) -> float:
    """Training images per second of the step alone, batches already on the device."""
    model = create_model("tf_efficientnet_lite0", 4, Preprocess(image_size=size), pretrained=False)
    model = model.to(device=device, memory_format=torch.channels_last).train()
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = autocast_dtype(device, mixed)
    scaler = grad_scaler(device, dtype)
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,), device=device)
    warmup = 5 if not compile else 10
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def loader_rate(device: torch.device, size: int, batch: int, steps: int) -> float:
    """Images per second that `make_batch` prepares on the CPU and hands to the device."""
    data = _Data(4 * batch, size)
    config = replace(TrainConfig(progress=False), image_size=size)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randperm(len(data.labels_t), generator=generator)[:batch] for _ in range(steps)]
    make_batch(data, rows[0], size, config, generator, device)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for r in rows:
        make_batch(data, r, size, config, generator, device)
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--output", default="train_gpu.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rates = {}
    for name, mixed in (("mixed", True), ("float32", False)):
        rates[name] = round(step_rate(device, args.image_size, args.batch_size, args.steps, mixed, args.compile), 1)
        print(f"{name}: {rates[name]} training images/s", flush=True)
    loader = round(loader_rate(device, args.image_size, args.batch_size, max(5, args.steps // 3)), 1)
    dtype = autocast_dtype(device, True)
    result = {
        "machine": machine(),
        "device": describe(device),
        "command": "benchmarks/train_gpu.py " + " ".join(sys.argv[1:]),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "mixed_precision": str(dtype).replace("torch.", ""),
        "step_images_per_s": rates,
        "mixed_speedup_over_float32": round(rates["mixed"] / rates["float32"], 2),
        "loader_images_per_s": loader,
        "loader_keeps_up": loader >= rates["mixed"],
    }
    if device.type == "cuda":
        result["targets_met"] = {"ge_1500_images_per_s": rates["mixed"] >= 1500, "loader_keeps_up": result["loader_keeps_up"]}
    print(f"loader: {loader} images/s; {write(args.output, result)}")


if __name__ == "__main__":
    main()
