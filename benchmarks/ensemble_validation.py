"""How far could more models go? Ensembles of finished runs, scored on validation data only.

Runs are grouped by protocol and split seed (the same validation images). Within a group, each
run's best checkpoint scores the validation images with its own test-time view and temperature;
the ensemble averages those probabilities. Per group and pooled over groups this reports:

- each member's accuracy, and the mean member;
- the ensemble's accuracy and NLL, and the mean accuracy of every ensemble of k of the runs
  (all subsets of size k), which shows what each added model buys;
- how many images at least one member gets right ("any member right"), and how many no member
  gets right: a ceiling for what choosing among these models could give, and the images that
  every recipe misses (listed with their label and the ensemble's answer, for a person to review:
  some may be mislabeled).

An ensemble of K runs costs K times the training budget and K times the prediction time, so it
is not a recipe for the 15-minute, 100-images/s targets; it measures how much headroom more
compute of the same kind holds. The members were early-stopped on these same validation images,
which flatters every figure here a little. The test split is never scored.

With ``--no-tta`` every member scores the images alone, without its test-time view: then an
ensemble of two costs what one model with its view does (two forward passes per image).

With ``--soup`` each group's members are also averaged weight by weight into one network (a
uniform "model soup", batch-norm statistics averaged too), which costs what one model does at
prediction. That needs members of one architecture fine-tuned from the same ImageNet weights;
the soup is scored with the first member's test-time view and the members' mean temperature.
Runs trained with ``--exclude`` are scored on the validation images of their split without the
exclusions, the same as the other runs' (they trained on none of them).

Usage: python benchmarks/ensemble_validation.py RUN_DIR [RUN_DIR ...] [--no-tta] [--soup] [--data DIR] [--output NAME]
Writes benchmarks/results/ensemble_validation.json (or NAME).
"""

from __future__ import annotations

import copy
import os
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_score, full_validation, machine, nll_sum, pooled_summary, run_and_split, runs_parser, write  # noqa: E402

from braintumor.inference.forward import predict_images  # noqa: E402


def soup(models: list):
    """One network whose every weight and batch-norm statistic is the members' mean."""
    states = [m.state_dict() for m in models]
    mean = {k: (sum(st[k].float() for st in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    souped = copy.deepcopy(models[0])
    souped.load_state_dict(mean)
    return souped


def main() -> None:
    parser = runs_parser(__doc__, "ensemble_validation.json")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="score every member without its test-time view")
    parser.add_argument("--soup", action="store_true", help="also score the members' weights averaged into one network")
    args = parser.parse_args()
    groups = defaultdict(list)  # (protocol, seed) -> [(run, probabilities)]
    labels_of, paths_of, classes = {}, {}, None
    nets = defaultdict(list)  # (protocol, seed) -> [(model, info)], kept for --soup
    images_of = {}
    for run in map(Path, args.runs):
        model, info, images, found, split = run_and_split(run, args.data)
        val = full_validation(found, info, split)
        images, labels, classes = images[val], found.labels[val], list(info.classes)
        key = (info.train_config["protocol"], info.train_config["seed"])
        if key in labels_of and not np.array_equal(labels_of[key], labels):
            raise SystemExit(f"{run}: other validation images than the earlier runs of {key}")
        labels_of[key], paths_of[key] = labels, [os.path.relpath(found.paths[i], args.data) for i in val]
        if args.soup:
            nets[key].append((model, info))
            images_of[key] = images
        probs = predict_images(model, images, tta=info.tta and args.tta, tta_view=info.tta_view, temperature=info.temperature)
        groups[key].append((str(run), probs))
        print(f"{run}: {int((probs.argmax(1) == labels).sum())}/{len(labels)}", flush=True)

    pooled = {"mean member": [0.0, 0.0], "ensemble": [0, 0.0], **({"soup": [0, 0.0]} if args.soup else {})}
    total = any_right = none_right = 0
    rows = []
    for (protocol, seed), members in sorted(groups.items()):
        labels = labels_of[(protocol, seed)]
        n = len(labels)
        right = np.stack([p.argmax(1) == labels for _, p in members])
        mean_probs = np.mean([p for _, p in members], axis=0)
        member_nll = [nll_sum(p, labels) for _, p in members]
        member_rows = [{"run": run, "correct": int(r.sum()), "accuracy": round(float(r.mean()), 4),
                        "nll": round(loss / n, 4)} for (run, _), r, loss in zip(members, right, member_nll)]
        row = {
            "protocol": protocol,
            "seed": seed,
            "val_n": n,
            "members": member_rows,
            "mean_member": add_score(pooled, "mean member", float(right.sum(1).mean()),
                                     float(np.mean(member_nll)), n),
            "ensemble": add_score(pooled, "ensemble", int((mean_probs.argmax(1) == labels).sum()), nll_sum(mean_probs, labels), n),
            "mean_correct_by_ensemble_size": {
                k: round(float(np.mean([(np.mean([members[i][1] for i in subset], axis=0).argmax(1) == labels).sum()
                                        for subset in combinations(range(len(members)), k)])), 2)
                for k in range(1, len(members) + 1)
            },
            "any_member_right": int(right.any(0).sum()),
            "no_member_right": int((~right.any(0)).sum()),
            "missed_by_every_member": [
                {"path": paths_of[(protocol, seed)][i], "label": classes[labels[i]], "ensemble": classes[mean_probs[i].argmax()],
                 "ensemble_probability": round(float(mean_probs[i].max()), 3)}
                for i in np.flatnonzero(~right.any(0))
            ],
        }
        if args.soup:
            first = nets[(protocol, seed)][0][1]
            temperature = float(np.mean([info.temperature for _, info in nets[(protocol, seed)]]))
            probs = predict_images(soup([m for m, _ in nets[(protocol, seed)]]), images_of[(protocol, seed)],
                                   tta=first.tta and args.tta, tta_view=first.tta_view, temperature=temperature)
            row["soup"] = add_score(pooled, "soup", int((probs.argmax(1) == labels).sum()), nll_sum(probs, labels), n)
        rows.append(row)
        total, any_right, none_right = total + n, any_right + row["any_member_right"], none_right + row["no_member_right"]
        print(f"{protocol} seed {seed}, {len(members)} runs: members {[m['correct'] for m in member_rows]}, "
              f"ensemble {row['ensemble']['correct']}/{n}, "
              + (f"soup {row['soup']['correct']}/{n}, " if args.soup else "") + f"any member right {row['any_member_right']}; mean right by "
              f"ensemble size {row['mean_correct_by_ensemble_size']}", flush=True)
    summary = pooled_summary(pooled, total, lambda key: f"pooled, {key}")
    summary["any_member_right"] = {"correct": any_right, "n": total, "accuracy": round(any_right / total, 4)}
    summary["no_member_right"] = none_right
    print(f"pooled, any member right: {any_right}/{total}; no member right: {none_right}")
    path = write(args.output, {"machine": machine(), "command": " ".join(["benchmarks/ensemble_validation.py", *sys.argv[1:]]),
                               "groups": rows, "pooled": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
