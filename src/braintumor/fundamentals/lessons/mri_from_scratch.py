"""A small CNN built with this engine, trained from scratch on the brain MRI slices.

Downscaled (64 x 64) grayscale slices go through four blocks of 3 x 3 convolution + ReLU +
2 x 2 max pooling (16, 32, 64, 128 filters), dropout, a dense layer of 128 ReLU units and a
4-way output,
trained with Adam (cosine learning-rate schedule) on cross-entropy, with random horizontal flips and small shifts as
augmentation. Early stopping watches validation accuracy and restores the best epoch; the
test split of the ``original`` protocol is scored once at the end and written up in the same
report as the transfer-learning model (`braintumor.evaluation.evaluator.write_report`).

The settings (defaults of `CNNConfig`) were chosen on the validation split (seed 0), from
three runs: three conv blocks with flips only reached 89.1% validation accuracy, three blocks
with flips and 4-pixel shifts 87.4%, four blocks with flips and 2-pixel shifts 90.5%.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from braintumor.data.classes import CLASSES
from ..autograd import Tensor, no_grad
from ..layers import Activation, Conv2d, Dense, Dropout, Flatten, MaxPool2d, Sequential
from ..losses import cross_entropy
from ..optim import Adam, EarlyStopping, batches
from .mri_data import MRIData, load_mri

TRANSFER_RESULTS = Path("benchmarks") / "results" / "train_accuracy.json"


@dataclass
class CNNConfig:
    """Settings of the from-scratch CNN (defaults chosen on the validation split)."""

    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    hidden: int = 128
    dropout: float = 0.3
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 30
    patience: int = 8
    shift: int = 2
    time_limit_min: float = 12.0  # CPU minutes of training (see train_cnn)
    tta: bool = True


def build_cnn(cfg: CNNConfig, n_classes: int, rng: np.random.Generator) -> Sequential:
    """conv-ReLU-pool blocks, then dropout, a hidden dense layer and the class logits (float32)."""
    layers, c_in, side = [], 1, cfg.image_size
    for c_out in cfg.channels:
        layers += [Conv2d(c_in, c_out, 3, padding=1, rng=rng, dtype=np.float32), Activation("relu"), MaxPool2d(2)]
        c_in, side = c_out, side // 2
    layers += [Flatten(), Dropout(cfg.dropout, rng), Dense(c_in * side * side, cfg.hidden, rng=rng, dtype=np.float32),
               Activation("relu"), Dense(cfg.hidden, n_classes, init="xavier", rng=rng, dtype=np.float32)]
    return Sequential(*layers)


def augment(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip of each image and a random shift by up to `shift` pixels (N x 1 x S x S)."""
    x = x.copy()
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, :, ::-1]
    if shift:
        side = x.shape[-1]
        padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode="edge")
        dy, dx = rng.integers(0, 2 * shift + 1, (2, len(x)))
        x = np.stack([padded[i, :, dy[i] : dy[i] + side, dx[i] : dx[i] + side] for i in range(len(x))])
    return x


def probabilities(net: Sequential, x: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
    """Softmax outputs, averaged with those of the mirrored images when `tta`."""
    net.eval()
    out = []
    with no_grad():
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            logits = net(Tensor(batch)).data.astype(np.float64)
            views = [logits] + ([net(Tensor(np.ascontiguousarray(batch[..., ::-1]))).data.astype(np.float64)] if tta else [])
            probs = [np.exp(v - v.max(1, keepdims=True)) for v in views]
            out.append(np.mean([p / p.sum(1, keepdims=True) for p in probs], axis=0))
    net.train()
    return np.concatenate(out)


def train_cnn(mri: MRIData, cfg: CNNConfig, seed: int = 0, log=print) -> tuple[Sequential, list[dict], dict]:
    """Train on the split's training part with early stopping on validation accuracy.

    Training ends after `cfg.epochs` epochs, after `cfg.patience` epochs without validation
    improvement, or once `cfg.time_limit_min` minutes of this process's CPU time are spent.
    CPU time rather than wall time, so that a machine shared with other jobs trains the same
    model, only more slowly; on an otherwise idle machine (NumPy on one thread) they are equal.

    Returns the network (best epoch's weights), per-epoch history and normalisation statistics.
    """
    rng = np.random.default_rng(seed)
    x = mri.images[:, None].astype(np.float32)
    train, val = mri.split.train, mri.split.val
    stats = {"mean": float(x[train].mean()), "std": float(x[train].std()) or 1.0}
    x = (x - stats["mean"]) / stats["std"]
    y = mri.labels
    net = build_cnn(cfg, len(CLASSES), rng)
    optimizer = Adam(net.parameters(), cfg.lr)
    stopper = EarlyStopping(cfg.patience, mode="max")
    history: list[dict] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(1, cfg.epochs + 1):
        # Cosine schedule, large steps first and small ones to settle at the end, over whichever
        # budget runs out first: the epochs or the time limit (so a slow machine still settles).
        progress = max((epoch - 1) / cfg.epochs, (time.process_time() - cpu_start) / (60 * cfg.time_limit_min))
        if progress >= 1.0:
            log(f"time limit of {cfg.time_limit_min} CPU minutes reached")
            break
        optimizer.lr = cfg.lr * 0.5 * (1.0 + np.cos(np.pi * progress))
        total, correct = 0.0, 0
        for idx in batches(len(train), cfg.batch_size, rng):
            rows = train[idx]
            optimizer.zero_grad()
            logits = net(Tensor(augment(x[rows], cfg.shift, rng)))
            loss = cross_entropy(logits, y[rows])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
            correct += int((logits.data.argmax(1) == y[rows]).sum())
        val_probs = probabilities(net, x[val])
        row = {
            "epoch": epoch,
            "train_loss": total / len(train),
            "train_acc": correct / len(train),
            "val_loss": float(-np.log(np.clip(val_probs[np.arange(len(val)), y[val]], 1e-12, 1)).mean()),
            "val_acc": float((val_probs.argmax(1) == y[val]).mean()),
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
        }
        history.append(row)
        log(f"epoch {epoch:3d}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}  "
            f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f}  {row['seconds']:.0f}s")
        if stopper.step(row["val_acc"], net.parameters()):
            log(f"early stopping: no validation improvement for {cfg.patience} epochs")
            break
    stopper.restore(net.parameters())
    stats["best_epoch"] = stopper.best_epoch + 1
    stats["x"] = x
    return net, history, stats


def transfer_learning_result(path: Path = TRANSFER_RESULTS) -> dict | None:
    """Mean test accuracy (and macro-F1) of the transfer-learning model on the original protocol,
    from ``benchmarks/train_accuracy.py``'s results; None if not measured or unreadable.

    Reads ``{"runs": {"original": [{"accuracy": ...}, ...]}}`` (also without the ``"runs"`` level).
    """
    if not Path(path).is_file():
        return None
    try:
        results = json.loads(Path(path).read_text())
        runs = results.get("runs", results)["original"]
        accs = [float(r["accuracy"]) for r in runs]
        f1s = [float(r["macro_f1"]) for r in runs if "macro_f1" in r]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not accs:
        return None
    return {"accuracy": float(np.mean(accs)), "macro_f1": float(np.mean(f1s)) if len(f1s) == len(accs) else None,
            "seeds": len(accs), "source": str(path)}


def comparison_table(rows: list[dict]) -> str:
    """Markdown table of method, test accuracy, macro-F1 and time."""
    lines = ["| method | test accuracy | macro-F1 | time |", "|---|---:|---:|---:|"]
    for r in rows:
        acc = "not measured yet" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f}%"
        f1 = "" if r.get("macro_f1") is None else f"{r['macro_f1']:.3f}"
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.0f} s"
        lines.append(f"| {r['method']} | {acc} | {f1} | {secs} |")
    return "\n".join(lines)


def run(quick: bool = False, data: str | Path | None = None, seed: int = 0, out: Path | None = None, progress: bool = False,
        config: CNNConfig | None = None, transfer_results: Path = TRANSFER_RESULTS, log=print, **_) -> tuple[dict, object]:
    from braintumor.evaluation.evaluator import classification_metrics, write_report
    from .common import figure
    from .handcrafted import fit_and_score

    quick_cfg = CNNConfig(image_size=32, channels=(8, 16), hidden=32, epochs=6, patience=6, shift=2, batch_size=8, lr=3e-3)
    cfg = config or (quick_cfg if quick else CNNConfig())
    start = time.perf_counter()
    mri = load_mri(data, cfg.image_size, seed=seed, progress=progress)
    load_seconds = time.perf_counter() - start
    net, history, stats = train_cnn(mri, cfg, seed, log)
    x = stats.pop("x")
    probs = probabilities(net, x[mri.split.test], cfg.tta)  # the one look at the test split
    metrics = classification_metrics(mri.labels[mri.split.test], probs, list(CLASSES))
    cnn_seconds = time.perf_counter() - start

    handcrafted = fit_and_score(mri)
    transfer = transfer_learning_result(transfer_results)
    rows = [
        {"method": f"hand-crafted: HOG + LBP, logistic regression ({cfg.image_size} px)", "accuracy": handcrafted["test"]["accuracy"],
         "macro_f1": handcrafted["test"]["macro_f1"], "seconds": handcrafted["seconds"]},
        {"method": f"from scratch: NumPy CNN ({cfg.image_size} px gray)", "accuracy": metrics["accuracy"],
         "macro_f1": metrics["macro_f1"], "seconds": cnn_seconds},
        {"method": f"transfer learning: EfficientNet-Lite0, ImageNet weights ({transfer['seeds'] if transfer else 0} seeds)",
         "accuracy": transfer["accuracy"] if transfer else None, "macro_f1": transfer["macro_f1"] if transfer else None, "seconds": None},
    ]
    table = comparison_table(rows)
    if out is not None:
        context = {"model": "braintumor.fundamentals NumPy CNN", "config": json.dumps(asdict(cfg)), "protocol": "original",
                   "split seed": seed, "split sizes": ", ".join(f"{k} {v}" for k, v in mri.split.sizes().items())}
        report = write_report(Path(out), metrics, list(CLASSES), mri.dataset.skipped, history, "from-scratch CNN — original protocol", context)
        with report.open("a") as f:
            f.write("\n## Compared\n\n" + table + "\n")

    fig, axes = figure(3, size=(4.0, 3.4))
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train (augmented)")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", ms=3, label="validation")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=8)
    axes[1].plot(epochs, [h["train_acc"] for h in history], "o-", ms=3, label="train (augmented)")
    axes[1].plot(epochs, [h["val_acc"] for h in history], "o-", ms=3, label="validation")
    axes[1].axvline(stats["best_epoch"], color="k", ls=":", lw=0.8, label="restored epoch")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    names = ["hand-crafted", "from scratch", "transfer"]
    values = [r["accuracy"] or 0.0 for r in rows]
    axes[2].bar(names, values, color=["#9ecae1", "#3182bd", "#08519c"])
    for i, r in enumerate(rows):
        axes[2].text(i, values[i] + 0.01, "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%", ha="center")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_ylabel("test accuracy (original protocol)")

    transfer_text = f"transfer learning {100 * transfer['accuracy']:.1f}%" if transfer else "transfer learning not measured yet"
    result = {
        "protocol": "original",
        "seed": seed,
        "config": asdict(cfg),
        "split_sizes": mri.split.sizes(),
        "load_seconds": load_seconds,
        "train_seconds": history[-1]["seconds"],
        "epochs_run": len(history),
        "best_epoch": stats["best_epoch"],
        "best_val_accuracy": max(h["val_acc"] for h in history),
        "history": history,
        "test": metrics,
        "handcrafted": handcrafted,
        "transfer_learning": transfer,
        "comparison": rows,
        "comparison_table": table,
        "finding": (
            f"the from-scratch CNN scores {100 * metrics['accuracy']:.1f}% test accuracy (macro-F1 {metrics['macro_f1']:.3f}) "
            f"after {len(history)} epochs ({history[-1]['cpu_seconds'] / 60:.1f} CPU min of training, "
            f"{history[-1]['seconds'] / 60:.1f} min wall); hand-crafted HOG + LBP "
            f"{100 * handcrafted['test']['accuracy']:.1f}%; {transfer_text}"
        ),
    }
    return result, fig
