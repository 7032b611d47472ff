"""The ``braintumor`` command line: one module per command, each a thin layer over the Python API.

Each module's ``register(sub)`` adds its parser; `main` runs the chosen command and turns every
expected failure (`BrainTumorError`, a refused option value, an output that cannot be written)
into one ``error:`` line and a ``hint:`` line with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys

from braintumor import __version__
from braintumor.cli import audit, compare, data, evaluate, explain, export, fit_ood, label_issues, predict, serve, train
from braintumor.cli.common import EXIT_CODES, Parser
from braintumor.errors import BrainTumorError

COMMANDS = (train, evaluate, predict, explain, export, fit_ood, data, audit, label_issues, compare, serve)

# What to do when an output cannot be written, by the system's error number.
_OUTPUT_HINTS = {
    errno.EACCES: "choose a folder you may write to (-o/--out)",
    errno.EPERM: "choose a folder you may write to (-o/--out)",
    errno.EROFS: "the file system is read-only; choose another -o/--out",
    errno.ENOSPC: "free some disk space (a training run then continues with --resume), or choose another -o/--out",
    errno.EDQUOT: "free some of your disk quota, or choose another -o/--out",
    errno.EISDIR: "that path is a folder; name a file",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def build_parser() -> Parser:
    parser = Parser(prog="braintumor",
                    description="Classify brain MRI slices: glioma, meningioma, pituitary tumor or no tumor. "
                                "Research use only, not a medical device.",
                    epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"braintumor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    from braintumor.fundamentals.cli import register as register_lessons

    register_lessons(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see ``braintumor --help``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a refused option value (already reported)
        return exc.code
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # (train --nproc starts it again)
    try:
        return args.func(args)
    except BrainTumorError as exc:
        _error(exc.message, exc.hint)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in _OUTPUT_HINTS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"cannot write {where}{exc.strerror or exc}", _OUTPUT_HINTS[exc.errno])
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run resumes from its last checkpoint with --resume", file=sys.stderr)
        return 130


def _error(message: str, hint: str | None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
