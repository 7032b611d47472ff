"""Learning curve: validation accuracy against the number of training images.

Scores finished runs of one recipe trained on shares of their training part
(``braintumor train --train-fraction F``; runs without it count as F = 1) on their validation
images, with each checkpoint's test-time view. The validation images of a split seed are the same
whatever the share, so the runs of each share answer on the same images. Reports per share the
training images, right answers (also apart for the images from Sartaj's Training and Testing
folders) and NLL, and fits ``error = a * n ** -b`` to the pooled error of each share (least
squares in log-log): how fast more images of the same kind would lower the error, and the
training-set size at which the fit would reach a 3% error (97% right). That last figure is an
extrapolation far beyond the data, given to show the order of magnitude, not as a promise.

Usage: python benchmarks/learning_curve.py RUN_DIR [RUN_DIR ...] [--data DIR] [--output NAME]
Writes benchmarks/results/learning_curve.json (or NAME) and a PNG of the same name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, epochs_run, machine, nll_sum, run_and_split, runs_parser, write  # noqa: E402

from braintumor.inference.forward import predict_images  # noqa: E402

TARGET_ERROR = 0.03


def fit_power_law(n: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``error = a * n ** -b``, least squares on ``log error`` against ``log n``."""
    slope, intercept = np.polyfit(np.log(n), np.log(error), 1)
    return float(np.exp(intercept)), float(-slope)


def plot(rows: list[dict], shares: dict, fit: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([r["train_n"] for r in rows], [100 * r["val_right"] / r["val_n"] for r in rows],
               s=18, color="0.6", label="one run (split seed)")
    n = [s["train_n_mean"] for s in shares.values()]
    ax.plot(n, [100 * s["val_accuracy"] for s in shares.values()], "o-", color="C0", label="pooled over seeds")
    if fit:
        grid = np.geomspace(min(n), max(max(n) * 1.5, min(fit["train_n_at_target"] or 0, 20 * max(n))), 100)
        ax.plot(grid, 100 * (1 - fit["a"] * grid ** -fit["b"]), "--", color="C0", alpha=0.6,
                label=f"fit: error ~ n^-{fit['b']:.2f}")
    ax.axhline(100 * (1 - TARGET_ERROR), color="C3", lw=1, ls=":", label="97%")
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel("validation images right (%)")
    ax.set_title("Learning curve (validation images only)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = runs_parser(__doc__, "learning_curve.json").parse_args()
    rows = []
    for run in map(Path, args.runs):
        model, info, images, found, split = run_and_split(run, args.data)
        labels = found.labels[split.val]
        probs = predict_images(model, images[split.val], tta=info.tta, tta_view=info.tta_view, temperature=info.temperature)
        right = probs.argmax(1) == labels
        testing = np.asarray([found.splits[i] == "Testing" for i in split.val])
        config = info.train_config
        rows.append({
            "run": str(run), "protocol": config["protocol"], "seed": config["seed"],
            "train_fraction": config.get("train_fraction", 1.0), "train_n": int(len(split.train)),
            "epochs_run": epochs_run(run), "val_n": int(len(labels)), "val_right": int(right.sum()),
            "val_right_testing_folder": [int(right[testing].sum()), int(testing.sum())],
            "val_right_training_folder": [int(right[~testing].sum()), int((~testing).sum())],
            "val_nll_sum": nll_sum(probs, labels),
        })
        print(rows[-1], flush=True)
    if len({r["protocol"] for r in rows}) > 1:
        raise SystemExit("the runs mix protocols: a learning curve compares one recipe on the same validation images")
    shares = {}
    for fraction in sorted({r["train_fraction"] for r in rows}):
        of = [r for r in rows if r["train_fraction"] == fraction]
        val_n = sum(r["val_n"] for r in of)
        shares[str(fraction)] = {
            "runs": len(of), "seeds": sorted(r["seed"] for r in of),
            "train_n_mean": round(float(np.mean([r["train_n"] for r in of])), 1),
            "val_right": sum(r["val_right"] for r in of), "val_n": val_n,
            "val_accuracy": round(sum(r["val_right"] for r in of) / val_n, 4),
            "val_right_testing_folder": [sum(r["val_right_testing_folder"][i] for r in of) for i in (0, 1)],
            "val_right_training_folder": [sum(r["val_right_training_folder"][i] for r in of) for i in (0, 1)],
            "val_nll": round(sum(r["val_nll_sum"] for r in of) / val_n, 4),
        }
    fit = None
    if len(shares) >= 2:
        n = np.array([s["train_n_mean"] for s in shares.values()])
        error = np.array([1 - s["val_accuracy"] for s in shares.values()])
        a, b = fit_power_law(n, error)
        fit = {"a": round(a, 4), "b": round(b, 4),
               "train_n_at_target": round(float((a / TARGET_ERROR) ** (1 / b))) if b > 0 else None,
               "target_error": TARGET_ERROR}
    png = RESULTS / Path(args.output).with_suffix(".png").name
    plot(rows, shares, fit, png)
    path = write(args.output, {"machine": machine(), "command": " ".join(sys.argv), "shares": shares, "power_law_fit": fit,
                               "plot": png.name, "runs": rows})
    print(shares, fit, f"wrote {path} and {png}", sep="\n")


if __name__ == "__main__":
    main()
