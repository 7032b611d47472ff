"""``braintumor lesson NAME``: registered by `braintumor.cli`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from braintumor.options import cli_type


def _cmd_lesson(args) -> int:
    from .lessons import _jsonable, run_lesson

    log = (lambda message: None) if args.json else print
    result = run_lesson(args.name, args.out, args.quick, args.data, args.seed, progress=not args.json, log=log)
    if args.json:
        summary = {k: v for k, v in result.items() if k != "history"}
        print(json.dumps(_jsonable(summary), indent=2))
    else:
        if "comparison_table" in result:
            print(result["comparison_table"])
        print(f"{args.name}: {result['finding']}")
        print(f"figure: {result['figure']}  (numbers in {Path(result['figure']).parent / 'result.json'})")
    return 0


def register(sub) -> None:
    """Add the ``lesson`` subcommand to the top-level subparsers `sub`."""
    from .lessons import DATA_LESSONS, LESSONS

    listing = "\n".join(f"  {name:<20} {description}" for name, (_, description) in LESSONS.items())
    p = sub.add_parser(
        "lesson",
        help="run a lesson on the theory behind the model (NumPy from scratch)",
        description="Run one lesson of braintumor.fundamentals: it prints its finding and writes a PNG figure and result.json.",
        epilog="lessons:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=list(LESSONS), metavar="NAME", help="which lesson (listed below)")
    p.add_argument("-o", "--out", type=cli_type("out"), help="folder for the figure and result.json (default: runs/lessons/NAME)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the finding")
    p.add_argument("--quick", action="store_true", help="small settings that finish in seconds (as the tests use)")
    p.add_argument("-d", "--data", type=cli_type("data"), help=f"dataset folder for {', '.join(DATA_LESSONS)} "
                   "(default: $BRAINTUMOR_DATA, else ../shared/data/sartaj)")
    p.add_argument("--seed", type=cli_type("seed"), default=0, help="seed of the data, initialization and split (default: 0)")
    p.set_defaults(func=_cmd_lesson)
