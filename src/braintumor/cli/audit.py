"""``braintumor audit``: duplicates, label conflicts, class-revealing file properties, and the
copies of a dataset's images in another folder (``--external``)."""

from __future__ import annotations

from braintumor.cli.common import add_command, add_data, add_out, data_of, print_json
from braintumor.errors import BrainTumorError
from braintumor.options import cli_type


def register(sub) -> None:
    p = add_command(sub, "audit", "find exact and near-duplicate images, label conflicts, and whether image size and "
                                  "compression alone reveal the class; write a report",
                    json_help="print the audit as JSON (without the lists of groups and copies, which audit.json in --out holds)")
    p.add_argument("positional_data", nargs="?", metavar="DIR", type=cli_type("data"), help="the same as -d DIR")
    add_data(p, help="dataset folder (<class>/<image> or Training|Testing/<class>/<image>)")
    p.add_argument("--threshold", type=cli_type("threshold"), default=None, help="near-duplicate Hamming threshold in bits, 0..24 (default: 8)")
    add_out(p, "report folder for audit.md, audit.json, contact_sheet.png (default: audit)", default="audit")
    p.add_argument("--external", type=cli_type("external"), metavar="OTHER",
                   help="also check OTHER, another labelled folder such as an external test set, for copies of the "
                        "dataset's images (a model trained on it has seen them): counts, against.csv and against_sheet.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.audit import audit
    from braintumor.data.classes import parse_class_map
    from braintumor.data.duplicates import DEFAULT_THRESHOLD

    if args.positional_data and args.data:
        raise BrainTumorError("the dataset is given twice (DIR and --data)", "give it once: braintumor audit -d DIR")
    data = args.positional_data or data_of(args)
    if not data:
        raise BrainTumorError("no dataset given", "pass -d DIR (a folder of <class>/<image>)")
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    result = audit(data, threshold, args.out, parse_class_map(args.class_map), progress=not args.quiet,
                   against=args.external)
    if args.json:
        if "against" in result:
            result["against"] = {k: v for k, v in result["against"].items() if k != "copies"}
        print_json({k: v for k, v in result.items() if k != "groups"})
        return 0
    print(f"{result['images']} images, {result['readable']} readable; near-duplicate threshold {result['threshold']} bits")
    names = {"byte": "byte-identical", "pixel": "pixel-identical", "near": "near-duplicate"}
    for key, name in names.items():
        level = result["levels"][key]
        across = sum(n for k, n in level["per_split"].items() if "+" in k)
        print(f"  {name:<16} {level['groups']:>5} groups, {level['files']:>5} images, {across:>4} groups across splits, "
              f"{level['label_conflicts']} label conflicts")
    shortcut = result["shortcut"]
    if "accuracy" in shortcut:
        print(f"  image size and compression alone predict the class of {shortcut['accuracy']:.1%} of the images "
              f"(largest class: {shortcut['majority']:.1%})")
    if "against" in result:
        a = result["against"]
        print(f"  {a['with_a_copy']} of the {a['readable']} readable images of {a['root']} have a copy here "
              f"({a['per_level']['byte']} byte, {a['per_level']['pixel']} pixel, {a['per_level']['near']} near; "
              f"{a['label_conflicts']} under another class)")
    print(f"report: {result['report']}")
    return 0
