"""Training-step throughput of a backbone (the default one unless named) on this CPU, by numeric
precision and size.

One step = forward, cross-entropy, backward and AdamW update of a batch of random images in
channels-last memory, as `braintumor.train` runs it. Precisions compared:

- ``float32``: no autocast;
- ``bfloat16``: everything under bfloat16 autocast;
- ``mixed``: bfloat16 autocast with the depthwise convolutions in float32
  (`braintumor.models.depthwise_in_float32`, what training uses).

Figures are medians of timed steps after warm-up steps; nothing else should run meanwhile.

Usage: python benchmarks/train_step_speed.py [--sizes 128 160 192] [--batch-size 32] [--steps 10]
       [--backbones tf_efficientnet_lite0 ...] [--output train_step_speed.json]
Writes benchmarks/results/train_step_speed.json (or --output).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from braintumor.models import DEFAULT_BACKBONE, create_model, depthwise_in_float32  # noqa: E402


def step_seconds(precision: str, size: int, batch_size: int, steps: int, warmup: int = 3, backbone: str = DEFAULT_BACKBONE) -> float:
    torch.manual_seed(0)
    model = create_model(backbone, pretrained=False).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch_size,))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "float32"):
            with depthwise_in_float32(model) if precision == "mixed" else contextlib.nullcontext():
                logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=[DEFAULT_BACKBONE], help="timm backbone names")
    parser.add_argument("--output", default="train_step_speed.json")
    args = parser.parse_args()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for precision in ("float32", "bfloat16", "mixed"):
                seconds = step_seconds(precision, size, args.batch_size, args.steps, backbone=backbone)
                rows.append({"backbone": backbone, "size": size, "precision": precision, "step_ms": round(1000 * seconds, 1),
                             "images_per_s": round(args.batch_size / seconds, 1)})
                print(f"{backbone} {size} px {precision:>8}: {1000 * seconds:6.0f} ms/step, "
                      f"{args.batch_size / seconds:6.1f} img/s", flush=True)
    path = write(args.output, {"machine": machine(), "command": " ".join(sys.argv),
                               "batch_size": args.batch_size, "steps": args.steps, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
