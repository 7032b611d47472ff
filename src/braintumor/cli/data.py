"""``braintumor data info`` and ``braintumor data fetch``."""

from __future__ import annotations

from braintumor.cli.common import add_command, add_data, data_of, print_json
from braintumor.options import cli_type


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect or download datasets", description="inspect or download datasets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = add_command(actions, "info", "count images per split and class, list unusable files", quiet=False,
                    json_help="print as JSON")
    add_data(p)
    p.set_defaults(func=info)
    p = add_command(actions, "fetch", "download and unpack the public Sartaj dataset (needs internet) where train looks by default")
    p.add_argument("--dest", type=cli_type("dest"), help="folder to create (default: $BRAINTUMOR_DATA, else data/sartaj)")
    p.add_argument("--url", type=cli_type("url"), help="archive URL (default: the dataset's public GitHub archive)")
    p.add_argument("--sha256", type=cli_type("sha256"), help="expected SHA-256 of the archive; the download is rejected if it differs")
    p.add_argument("--archive", type=cli_type("archive"), help="use this already downloaded zip instead of downloading")
    p.set_defaults(func=fetch)


def info(args) -> int:
    from braintumor.data.classes import parse_class_map
    from braintumor.data.dataset import default_data_dir, scan

    dataset = scan(data_of(args) or default_data_dir(), parse_class_map(args.class_map))
    found = {
        "root": str(dataset.root),
        "images": len(dataset),
        "counts": dataset.counts(),
        "fingerprint": dataset.fingerprint(),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
    }
    if args.json:
        print_json(found)
        return 0
    print(f"{found['root']}: {found['images']} images (fingerprint {found['fingerprint'][:16]})")
    for split, row in found["counts"].items():
        print(f"  {split:<9} " + "  ".join(f"{c} {n}" for c, n in row.items()))
    for item in found["skipped"]:
        print(f"  skipped {item['path']}: {item['reason']}")
    return 0


def fetch(args) -> int:
    import os
    from pathlib import Path

    from braintumor.data.dataset import DATA_ENV, FETCH_DIR
    from braintumor.data.fetch import SARTAJ_URL, fetch as fetch_dataset

    dest = Path(args.dest or os.environ.get(DATA_ENV) or FETCH_DIR)
    dest = fetch_dataset(dest, args.url or SARTAJ_URL, args.sha256, Path(args.archive) if args.archive else None, not args.quiet)
    print(f"dataset ready in {dest}")
    return 0
