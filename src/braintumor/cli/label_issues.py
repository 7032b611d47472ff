"""``braintumor label-issues``: images whose label is likely wrong, from out-of-sample predictions."""

from __future__ import annotations

import sys

from braintumor.cli.common import add_command, add_data, add_out, data_of, print_json
from braintumor.options import cli_type


def register(sub) -> None:
    p = add_command(sub, "label-issues", "find images whose label is likely wrong, from the out-of-sample predictions "
                                         "of runs or a cross-validation; write a report",
                    json_help="print the result, every flagged image included, as JSON")
    p.add_argument("runs", nargs="+", type=cli_type("runs"), metavar="RUN",
                   help="run folder (its test split is scored) or cross-validation folder (every fold's test split: every image once)")
    add_data(p, help="dataset folder, if it moved since training", class_map=False)
    add_out(p, "report folder (default: RUN/label_issues)")
    p.add_argument("--sheet", type=cli_type("sheet"), default=48, help="flagged images shown in label_issues.png (default: 48)")
    p.set_defaults(func=run)


def run(args) -> int:
    from braintumor.evaluation.label_issues import label_issues

    result = label_issues(args.runs, data_of(args), args.out, progress=not args.quiet, sheet=args.sheet)
    if args.json:
        print_json(result)
        return 0
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{result['n']} images scored out-of-sample, accuracy {result['accuracy']:.2%} against the given labels")
    ci = result.get("estimated_label_errors_ci")
    print(f"estimated wrong labels: {result['estimated_label_errors']:.0f} ({result['estimated_error_rate']:.1%}"
          + (f", 95% CI {ci[0]:.0f}-{ci[1]:.0f}" if ci else "") + "); "
          f"flagged for review: {len(result['issues'])}, {result['errors_flagged']} of the model's {result['model_errors']} errors")
    for row in result["issues"][:10]:
        print(f"  {row['rank']:>3}. {row['path']}: {row['label']} -> {row['suggested']} ({row['p_suggested']:.2f})")
    print(f"report: {result['report']}")
    return 0
