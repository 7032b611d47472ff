"""Every option's bounds, declared once as data.

`RULES` maps an option's API name (``image_size``, ``drop_rate``, …) to a `Rule`. The same rule
is checked where a value enters the package — `TrainConfig`, `Preprocess`, `Predictor`, the
commands — by `check`, and where the command line parses it, by `cli_type`, whose error is shown
as ``error: …`` with a hint (exit code 2). The CLI's help text states each rule (`describe`).

Examples
--------
>>> check("image_size", 160)
160
>>> RULES["drop_rate"].describe()
'a number in [0, 1)'
>>> RULES["drop_rate"].accepts(1.0)
False
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass

from braintumor.errors import BrainTumorError

SEED_MAX = 2**32 - 1
PROTOCOLS = ("original", "official", "dedup", "cross")  # the evaluation protocols (braintumor.data.protocols)


@dataclass(frozen=True)
class Rule:
    """The values one option accepts.

    Parameters
    ----------
    kind : {"int", "float", "path", "text", "device"}
        Integers, finite numbers, non-empty paths, non-empty text, or a device name (``auto``,
        ``cpu``, ``cuda``, ``cuda:N``, ``mps``; whether it is there is checked when it is used).
    low, high : float, optional
        Bounds (None: unbounded).
    low_open, high_open : bool
        Exclude the bound itself.
    also : tuple
        Values accepted besides the interval (``0`` meaning "off", say).
    hint : str, optional
        What to do about a refused value.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()
    hint: str | None = None

    def describe(self) -> str:
        """The accepted values in words: ``an integer in 16..1024``, ``a number in [0, 1)``."""
        if self.kind == "path":
            return "a non-empty path"
        if self.kind == "text":
            return "non-empty text"
        if self.kind == "device":
            return "auto, cpu, cuda, cuda:N or mps"
        if self.kind == "int":
            if self.low is not None and self.high is not None:
                text = f"an integer in {_num(self.low)}..{_num(self.high)}"
            elif self.low is not None:
                text = f"an integer of at least {_num(self.low)}"
            else:
                text = "an integer"
        else:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            if self.low is not None and self.high is not None:
                text = f"a number in {left}{_num(self.low)}, {_num(self.high)}{right}"
            elif self.low is not None:
                text = f"a number {'above' if self.low_open else 'of at least'} {_num(self.low)}"
            else:
                text = "a finite number"
        if self.also:
            text += " or " + " or ".join(_num(v) for v in self.also)
        return text

    def accepts(self, value) -> bool:
        """Whether `value` (already of the right Python type) is allowed."""
        if self.kind in ("path", "text"):
            return isinstance(value, (str, os.PathLike)) and str(value).strip() != ""
        if self.kind == "device":
            return isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", value.strip().lower()) is not None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        if value in self.also:
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _unit(low_open=False, high_open=False, **kw) -> Rule:
    return Rule("float", 0, 1, low_open, high_open, **kw)


# Defaults of the "not a brain MRI" detector (`braintumor.inference.ood`): the share of validation
# images its threshold accepts, and the intensity-remapped copies of each training image it is
# fitted on besides the image. Chosen on half of the Masoud-Training slices that a model trained on
# Sartaj alone had not seen, among the settings that reject every non-MRI image
# (`benchmarks/ood_collections.py`, docs/collections.md).
OOD_ACCEPT = 0.995
OOD_VARIANTS = 2

RULES: dict[str, Rule] = {
    # the split and the run
    "seed": Rule("int", 0, SEED_MAX),
    "train_seed": Rule("int", 0, SEED_MAX),
    "val_fraction": Rule("float", 0, 0.5, low_open=True),
    "test_fraction": Rule("float", 0, 0.5, low_open=True),
    "train_fraction": _unit(low_open=True),
    "folds": Rule("int", 2, 100, also=(0,), hint="0 trains one model; 2 or more cross-validates"),
    "fold": Rule("int", 0, 99),
    "time_limit_min": Rule("float", 0, 100_000, hint="leave --time-limit-min out (or give 0) for no limit"),
    # the network and its input
    "image_size": Rule("int", 16, 1024),
    "drop_rate": _unit(high_open=True),
    "drop_path_rate": _unit(high_open=True),
    "freeze_blocks": Rule("int", 0, 16),
    "tta_angle": Rule("float", -180, 180),
    # the optimisation
    "epochs": Rule("int", 1, 10_000),
    "batch_size": Rule("int", 1, 4096),
    "micro_batch": Rule("int", 2, 4096, hint="batch norm needs two images per micro-batch; leave --micro-batch out for one per process"),
    "lr": Rule("float", 0, 1, low_open=True, hint="typical values are 1e-4 to 1e-3"),
    "weight_decay": Rule("float", 0, 10),
    "warmup_epochs": Rule("float", 0, 1000),
    "patience": Rule("int", 1, 10_000),
    "layer_decay": _unit(low_open=True),
    "label_smoothing": _unit(high_open=True),
    "ema_decay": _unit(high_open=True),
    "low_res_scale": Rule("float", 0.25, 1),
    "low_res_fraction": _unit(high_open=True),
    "mixup_alpha": Rule("float", 0, 10),
    "erase_prob": _unit(),
    "contrast_prob": _unit(),
    "degrade_prob": _unit(),
    "balance_sources": _unit(),
    "distill_weight": _unit(low_open=True),
    "distill_temperature": Rule("float", 0, 20, low_open=True),
    # running
    "threads": Rule("int", 1, 4096, hint="leave --threads out to use every core"),
    "nproc": Rule("int", 1, 1024, hint="one process per GPU, or a few on a CPU"),
    "frame": Rule("int", 1, 100_000),
    "axis": Rule("int", 0, 2, hint="the NIfTI array axis to take slices along; leave --axis out for the axial one"),
    "volume": Rule("int", 1, 100_000, hint="the volume (from 1) of a 4-D NIfTI series"),
    "calibration": Rule("int", 1, 100_000),
    "threshold": Rule("int", 0, 24),
    "accept": Rule("float", 0, 1, low_open=True, high_open=True),
    "sheet": Rule("int", 0, 10_000),
    # braintumor serve
    "port": Rule("int", 1, 65535, hint="choose a free port such as 8000 or 8080"),
    "workers": Rule("int", 1, 64, hint="leave --workers out to use every core (at most 4)"),
    "queue": Rule("int", 0, 100_000, hint="0 answers 503 as soon as every worker is busy"),
    "max_upload_mb": Rule("float", 0, 1024, low_open=True, hint="a brain MRI slice is well under 20 MiB, even as DICOM"),
    "max_volume_mb": Rule("float", 0, 4096, low_open=True, hint="a 256 x 256 x 180 volume of 16-bit voxels is 23 MiB"),
    "host": Rule("text", hint="use 127.0.0.1 for this machine only, or 0.0.0.0 for every interface"),
    # paths and names: never empty
    "data": Rule("path"), "out": Rule("path"), "model": Rule("path"), "teacher": Rule("path"),
    "weights": Rule("path"), "external": Rule("path"), "train_data": Rule("path"), "against": Rule("path"),
    "exclude": Rule("path"), "relabel": Rule("path"), "csv": Rule("path"), "archive": Rule("path"),
    "dest": Rule("path"), "backbone": Rule("text"), "class_map": Rule("text"), "target": Rule("text"),
    "url": Rule("text"), "sha256": Rule("text"), "runs": Rule("path"), "inputs": Rule("path"),
    "variants": Rule("int", 0, 8, hint="1 doubles the images the detector is fitted on; 0 turns the copies off"),
    "test_collection": Rule("text", hint="name the collection by its folder (masoud for .../masoud/Training)"),
    "device": Rule("device", hint="auto takes a CUDA GPU, then Apple's MPS, then the CPU"),
}


def flag(name: str) -> str:
    """The command-line spelling of an option: ``image_size`` → ``--image-size``."""
    return "--" + name.replace("_", "-")


def check(name: str, value, *, allow_none: bool = False):
    """Return `value` if `RULES[name]` accepts it, else raise a `BrainTumorError` naming the option.

    Integral floats (``3.0``) are returned as ints for integer options."""
    if value is None and allow_none:
        return None
    rule = RULES[name]
    if not rule.accepts(value):
        raise BrainTumorError(f"{name} ({flag(name)}) must be {rule.describe()}, got {value!r}",
                              rule.hint or f"see 'braintumor COMMAND --help' for {flag(name)}")
    if rule.kind == "int":
        return int(value)
    if rule.kind == "float":
        return float(value)
    return value


def cli_type(name: str):
    """An argparse ``type=`` that parses a string as `RULES[name]` wants and checks it.

    A refused value becomes an `argparse.ArgumentTypeError`, which the CLI shows as one
    ``error:`` line with a hint (exit code 2)."""
    rule = RULES[name]

    def parse(text: str):
        try:
            if rule.kind == "int":
                value = float(text) if text.strip().lower() not in ("nan", "inf", "-inf", "+inf") else float("nan")
                if value.is_integer() and abs(value) < 2**63:
                    value = int(value)
            elif rule.kind == "float":
                value = float(text)
            else:
                value = text
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}") from None
        if not rule.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}")
        return value

    parse.__name__ = rule.describe()  # argparse names the type in some messages
    return parse


def cap_threads(threads: int | None) -> int | None:
    """`threads` checked, and capped at the machine's cores with a word on stderr (more threads
    than cores only slow a CPU down)."""
    if threads is None:
        return None
    threads = check("threads", threads)
    cores = os.cpu_count() or 1
    if threads > cores:
        print(f"note: --threads {threads} is more than this machine's {cores} cores; using {cores}", file=sys.stderr)
        return cores
    return threads
