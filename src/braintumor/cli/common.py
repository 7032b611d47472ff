"""What every command shares: the option spellings (``-d/--data``, ``-m/--model``, ``-o/--out``,
``-q``, ``--json``), the parser that turns a refused value into one ``error:``/``hint:`` message,
and the printing of metrics."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from braintumor.errors import BrainTumorError
from braintumor.options import RULES, cli_type

EXIT_CODES = """exit codes:
  0    done (inputs of a batch that failed are reported, each with its reason)
  2    bad usage, option value or input: one 'error:' line and a 'hint:' line
  3    none of the inputs could be processed
  130  interrupted (a training run continues with --resume)"""


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are one ``error:`` line and a hint, exit code 2."""

    def error(self, message: str):
        match = re.match(r"argument (?:-\w/)?--([\w-]+)", message)
        rule = RULES.get(match.group(1).replace("-", "_")) if match else None
        print(f"error: {message}", file=sys.stderr)
        print(f"  hint: {rule.hint if rule and rule.hint else f'see {self.prog!r} --help'}", file=sys.stderr)
        raise SystemExit(2)


def add_command(sub, name: str, help: str, *, quiet: bool = True, json_help: str | None = None) -> Parser:
    """A sub-command's parser with the options every command has (``-q``, ``--json``)."""
    p = sub.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    if json_help:
        p.add_argument("--json", action="store_true", help=json_help)
    return p


def add_data(p: argparse.ArgumentParser, help: str | None = None, class_map: bool = True) -> None:
    """``-d/--data DIR`` (and ``--class-map``); given several times, the collections are pooled
    (read them with `data_of`)."""
    p.add_argument("-d", "--data", type=cli_type("data"), action="append", metavar="DIR", help=(help or (
        "dataset folder (<class>/<image> or Training|Testing/<class>/<image>); default: $BRAINTUMOR_DATA, "
        "else data/sartaj if it exists, else ../shared/data/sartaj"))
        + ". Given several times, the collections are pooled, near-duplicates grouped across them")
    if class_map:
        p.add_argument("--class-map", type=cli_type("class_map"),
                       help="extra folder-to-class names, e.g. 'tumor_g=glioma,healthy=no_tumor'")


def data_of(args):
    """The ``--data`` a command was given: None, one folder, or a list of several collections."""
    data = getattr(args, "data", None)
    if not data:
        return None
    return data[0] if len(data) == 1 else list(data)


def add_model(p: argparse.ArgumentParser, help: str = "", positional: bool = False) -> None:
    """``-m/--model PATH``, repeatable: several models are an ensemble (their calibrated
    probabilities averaged). With `positional`, ``MODEL`` may also be given first, as before."""
    if positional:
        p.add_argument("positional_model", nargs="?", metavar="MODEL", type=cli_type("model"),
                       help="the same as -m MODEL")
    p.add_argument("-m", "--model", dest="model", action="extend", nargs="+", type=cli_type("model"), metavar="PATH",
                   help=(help + " " if help else "") + "A checkpoint (.safetensors), an exported .onnx where it applies, "
                        "or 'default' for the model shipped with braintumor. Given several times (or -m A B), an ensemble.")


def add_out(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``-o/--out PATH``."""
    p.add_argument("-o", "--out", type=cli_type("out"), default=default, metavar="PATH", help=help)


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where the network runs."""
    p.add_argument("--device", type=cli_type("device"),
                   help="where the network runs: auto (a CUDA GPU, then Apple's MPS, then the CPU), cpu, cuda, cuda:N "
                        "or mps (default: auto)")


def add_nproc(p: argparse.ArgumentParser) -> None:
    """``--nproc N``: run the command as a data-parallel job of N processes (`data_parallel`)."""
    p.add_argument("--nproc", type=cli_type("nproc"), metavar="N",
                   help="train with N processes on this machine, data-parallel (one per GPU; on a CPU they share its cores): "
                        "what `torchrun --standalone --nproc-per-node N -m braintumor ...` does; for several machines "
                        "use torchrun itself (docs/scaling.md)")


def data_parallel(args, run) -> int:
    """Run ``run(args, device)`` as this process's part of a data-parallel job: start the job
    first if ``--nproc N`` asks for one (the same command line without ``--nproc``, in N
    processes), or join the job torchrun started this process in, or simply run it."""
    from braintumor import distributed
    from braintumor.model.device import resolve_device

    if getattr(args, "nproc", None) and args.nproc > 1 and distributed.launched_world_size() == 1:
        return distributed.launch(args.nproc, _without_nproc(args.command_line))
    device = distributed.rank_device(resolve_device(args.device))
    with distributed.process_group(device):  # (joined only in a job torchrun started)
        return run(args, device)


def _without_nproc(argv: list[str]) -> list[str]:
    """A command line without its --nproc option, for the processes --nproc starts."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=cli_type("threads"),
                   help="CPU threads (default: every core; more than the cores is capped at them)")


def add_volume_options(p: argparse.ArgumentParser) -> None:
    """``--axis`` and ``--volume``, for NIfTI volumes (`braintumor.data.nifti`)."""
    p.add_argument("--axis", type=cli_type("axis"),
                   help="take the slices of NIfTI volumes along this array axis, 0, 1 or 2 (default: the axis "
                        "each volume's orientation marks as superior-inferior, i.e. axial slices)")
    p.add_argument("--volume", type=cli_type("volume"),
                   help="which volume (from 1) of 4-D NIfTI series (required for a series of several)")


def models_of(args, required: bool = True) -> list[str]:
    """The models a command was given, positional alias first; 'default' names the shipped model."""
    from braintumor.inference.predictor import DEFAULT_MODEL

    given = ([args.positional_model] if getattr(args, "positional_model", None) else []) + (args.model or [])
    if required and not given:
        raise BrainTumorError("no model given", "pass -m PATH (a checkpoint), or -m default for the shipped model")
    return [str(DEFAULT_MODEL) if m == "default" and not Path(m).exists() else m for m in given]


def print_json(value) -> None:
    print(json.dumps(value, indent=2))


def print_metrics(metrics: dict, as_json: bool) -> None:
    """A test split's headline figures and the report's path."""
    if as_json:
        print_json(metrics)
        return
    print(f"test accuracy {100 * metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['n']}), "
          f"macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")
    print(f"report: {metrics['report']}")
