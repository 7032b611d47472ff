"""Training-step throughput of a backbone (the default one unless named) on this CPU, by numeric
precision and size.

One step = forward, cross-entropy, backward and AdamW update of a batch of random images in
channels-last memory, as `braintumor.training.trainer` runs it. Precisions compared:

- ``float32``: no autocast;
- ``bfloat16``: everything under bfloat16 autocast;
- ``mixed``: bfloat16 autocast with the depthwise convolutions in float32
  (`braintumor.model.factory.depthwise_in_float32`, what training uses).

With ``--compile`` each precision is also timed with the model wrapped in ``torch.compile``
(inductor, default mode, with an empty cache of its own so that nothing compiled earlier is
reused); the first step, which builds the graphs, is reported apart as ``compile_s``. Training
does not compile: on the 2-core Intel Xeon at 160 px a compiled step was within 8% of an eager
one in every precision, and building the graphs costs about an epoch
(``train_step_speed_compile_intel.json``).

Figures are medians of timed steps after a first step and warm-up steps; nothing else should
run meanwhile.

Usage: python benchmarks/train_step_speed.py [--sizes 128 160 192] [--batch-size 32] [--steps 10]
       [--backbones tf_efficientnet_lite0 ...] [--compile] [--output train_step_speed.json]
Writes benchmarks/results/train_step_speed.json (or --output).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from braintumor.model.factory import DEFAULT_BACKBONE, create_model, depthwise_in_float32  # noqa: E402


def step_seconds(precision: str, size: int, batch_size: int, steps: int, warmup: int = 3, backbone: str = DEFAULT_BACKBONE,
                 compile: bool = False) -> tuple[float, float]:
    """Median seconds of a timed training step, and seconds of the first step (with `compile`,
    that is when torch.compile traces and builds the forward and backward graphs)."""
    torch.manual_seed(0)
    model = create_model(backbone, pretrained=False).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile else model
    x = torch.rand(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch_size,))
    times = []
    # the depthwise patch stays on for all steps, so a compiled graph is traced once with it
    with depthwise_in_float32(model) if precision == "mixed" else contextlib.nullcontext():
        for i in range(1 + warmup + steps):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "float32"):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1 + warmup :]), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=[DEFAULT_BACKBONE], help="timm backbone names")
    parser.add_argument("--compile", action="store_true",
                        help="also time each precision with torch.compile (inductor); its first step is reported as compile_s")
    parser.add_argument("--output", default="train_step_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        # a cold compile each run: inductor's on-disk cache would hide its cost
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        rows = measure(args)
    path = write(args.output, {"machine": machine(), "command": " ".join(sys.argv),
                               "batch_size": args.batch_size, "steps": args.steps, "rows": rows})
    print(f"wrote {path}")


def measure(args) -> list[dict]:
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for precision in ("float32", "bfloat16", "mixed"):
                for compiled in (False, True) if args.compile else (False,):
                    seconds, first = step_seconds(precision, size, args.batch_size, args.steps, backbone=backbone,
                                                  compile=compiled)
                    rows.append({"backbone": backbone, "size": size, "precision": precision, "compiled": compiled,
                                 "step_ms": round(1000 * seconds, 1), "images_per_s": round(args.batch_size / seconds, 1),
                                 **({"compile_s": round(first, 1)} if compiled else {})})
                    print(f"{backbone} {size} px {precision:>8}{' compiled' if compiled else ''}: {1000 * seconds:6.0f} ms/step, "
                          f"{args.batch_size / seconds:6.1f} img/s" + (f" (first step {first:.0f} s)" if compiled else ""),
                          flush=True)
    return rows


if __name__ == "__main__":
    main()
