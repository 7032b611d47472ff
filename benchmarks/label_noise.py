"""How many of the dataset's labels are likely wrong: `braintumor label-issues` on a cross-validation.

Every image is scored by the fold model that did not train on it (``braintumor train --folds K``;
under ``dedup`` near-duplicate copies sit in one fold, so no copy of a test image was trained
on). Confident learning (cleanlab) estimates from those probabilities how many images carry a
wrong label, per given and true class, and flags the likeliest. That estimate is a ceiling for
any test accuracy measured against these labels, under a protocol where no copy of a mislabelled
image is trained on.

A check of the method on this data: near-duplicate copies (the groups of `braintumor audit`)
filed under different classes (label conflicts) carry at least one wrong label, unless the copies
are neighbouring slices that differ where it matters. In each such group, a sound flagger flags
the members of some labels and keeps at least one: this script counts how often it does.

Usage: python benchmarks/label_noise.py CV_DIR [CV_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/label_noise.json (or NAME), its contact sheet of flagged images beside
it (.png), and label-issues' own report into CV_DIR/label_issues/.
"""

from __future__ import annotations

import shutil
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, runs_parser, write  # noqa: E402

from braintumor.data.dataset import scan  # noqa: E402
from braintumor.data.duplicates import duplicate_groups  # noqa: E402
from braintumor.evaluation.label_issues import label_issues  # noqa: E402


def conflict_check(result: dict, data: str) -> dict:
    """Label-conflict groups (near-duplicate copies under two or more labels) among the scored
    images, and how the flags fall in them."""
    dataset = scan(data)
    ids = duplicate_groups(dataset, progress=False)
    label = {str(p.relative_to(dataset.root)): dataset.classes[y] for p, y in zip(dataset.paths, dataset.labels)}
    flagged = {row["path"] for row in result["issues"]}
    members = defaultdict(list)
    for path, g in zip(label, ids):
        members[g].append(path)
    groups = [m for m in members.values() if len({label[p] for p in m}) > 1]
    rows = []
    for m in groups:
        marks = [p in flagged for p in m]
        rows.append({"files": [{"path": p, "label": label[p], "flagged": p in flagged} for p in m],
                     "some_flagged": any(marks), "some_kept": not all(marks)})
    return {
        "groups": len(groups),
        "images": sum(len(m) for m in groups),
        "groups_with_a_flag": sum(r["some_flagged"] for r in rows),
        "groups_with_a_flag_and_one_kept": sum(r["some_flagged"] and r["some_kept"] for r in rows),
        "groups_all_flagged": sum(not r["some_kept"] for r in rows),
        "detail": rows,
    }


def main() -> None:
    parser = runs_parser(__doc__, "label_noise.json")
    args = parser.parse_args()
    result = label_issues(args.runs, args.data, progress=False)
    conflicts = conflict_check(result, args.data)
    payload = {
        "machine": machine(),
        "command": " ".join(["benchmarks/label_noise.py", *sys.argv[1:]]),
        "report": result["report"],
        **{k: result[k] for k in ("runs", "n", "accuracy", "model_errors", "estimated_label_errors", "estimated_label_errors_ci",
                                  "estimated_error_rate", "estimated_error_rate_ci", "joint", "per_class", "per_source", "errors_flagged")},
        "flagged": len(result["issues"]),
        "label_conflicts": conflicts,
        "issues": result["issues"],
    }
    path = write(args.output, payload)
    sheet = Path(result["report"]).with_name("label_issues.png")
    if sheet.is_file():
        shutil.copyfile(sheet, path.with_suffix(".png"))
    print(f"{result['n']} images, accuracy {result['accuracy']:.2%} ({result['model_errors']} errors)")
    low, high = result["estimated_label_errors_ci"]
    print(f"estimated wrong labels {result['estimated_label_errors']:.0f} ({result['estimated_error_rate']:.1%}, "
          f"95% CI {low:.0f}-{high:.0f}); "
          f"flagged {len(result['issues'])}, of which {result['errors_flagged']} are model errors")
    print(f"label-conflict groups {conflicts['groups']} ({conflicts['images']} images): a flag in "
          f"{conflicts['groups_with_a_flag']}, with one member kept in {conflicts['groups_with_a_flag_and_one_kept']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
