"""``braintumor compare``: one recipe trained and tested under several protocols, one table."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from braintumor.cli.common import add_command, data_parallel, print_json
from braintumor.cli.train import add_run_args, config_kwargs
from braintumor.options import PROTOCOLS


def register(sub) -> None:
    p = add_command(sub, "compare", "train and evaluate one configuration under original, dedup and official; write a table",
                    json_help="print the table as JSON")
    add_run_args(p, "runs/compare", "folder for one run per protocol and comparison.md (default: runs/compare)")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, help="default: original, dedup, official, and cross with several --data")
    p.set_defaults(func=run)


def run(args) -> int:
    return data_parallel(args, _run)


def _run(args, device) -> int:
    from braintumor.data.dataset import default_data_dir
    from braintumor.distributed import is_main
    from braintumor.evaluation.compare import compare, default_protocols
    from braintumor.training import TrainConfig
    from braintumor.training.runfolder import stored_config

    kwargs = config_kwargs(args)
    protocols = tuple(args.protocols or default_protocols(kwargs.get("data")))
    if args.resume:  # the runs keep the settings they started with, except those given again
        names = {f.name for f in fields(TrainConfig)} - {"protocol", "out", "folds", "fold", "overwrite"}
        stored = next(filter(None, (stored_config(Path(args.out) / p) for p in protocols)), None) or {}
        kwargs = {**{k: v for k, v in stored.items() if k in names}, **kwargs}
    kwargs.setdefault("data", str(default_data_dir()))
    result = compare(TrainConfig(**kwargs), protocols)
    if not is_main():  # (in a data-parallel job, rank 0 reports)
        return 0
    if args.json:
        print_json(result)
        return 0
    for row in result["rows"]:
        if "skipped" in row:
            print(f"  {row['protocol']:<9} skipped: {row['skipped']}")
        else:
            lo, hi = row["accuracy_ci"]
            print(f"  {row['protocol']:<9} accuracy {100 * row['accuracy']:.2f}% (95% CI {100 * lo:.2f}–{100 * hi:.2f}), "
                  f"{row['leaked_test_images']} of {row['n']} test images have a copy in train/val")
    print(f"report: {result['report']}")
    return 0
