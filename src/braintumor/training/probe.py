"""Linear probing (LP-FT): fit the head by logistic regression on frozen pretrained features
before fine-tuning (``train --probe-head``).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from braintumor.model.factory import to_float
from braintumor.errors import BrainTumorError
from braintumor.training.runfolder import log


@torch.inference_mode()
def pooled_features(model, images: np.ndarray, size: int, bf16: bool, batch_size: int = 64) -> np.ndarray:
    """The network's pooled penultimate features (`Classifier.features`) of uint8 images resized
    to `size`, in evaluation mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(torch.from_numpy(images[start : start + batch_size]), size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(model.features(x).float().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def fit_linear_head(model, images: np.ndarray, labels: np.ndarray, split, size: int, bf16: bool = True,
                    progress: bool = False) -> float:
    """Linear probing, the first step of LP-FT: set the model's dense head to a multinomial
    logistic regression fitted on its frozen features of the training images.

    The regularisation strength is chosen among a few values by the validation images' log-loss.
    The features are those of evaluation mode (ImageNet's batch-norm statistics); training
    normalises each batch by its own statistics and drops half the features, so the fitted head
    does not fit what the first training steps see: on Sartaj the first epoch's training loss
    was 1.35, near chance, all the same.

    Parameters
    ----------
    model : Classifier
        Its backbone is left as it is; only the head's weight and bias change.
    images, labels : arrays
        Every image of the dataset (``N x S x S x 3`` uint8) and its class index.
    split : Split
        Fitted on ``split.train``, the strength chosen on ``split.val``.
    size : int
        Image side the features are computed at (the first epoch's).

    Returns
    -------
    float
        The chosen head's accuracy on the validation images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    bar = tqdm(total=2, desc="linear probe", disable=not progress)
    train_x = pooled_features(model, images[split.train], size, bf16)
    bar.update()
    val_x = pooled_features(model, images[split.val], size, bf16)
    bar.update()
    bar.close()
    train_y, val_y = labels[split.train], labels[split.val]
    classes = np.arange(model.net.get_classifier().out_features)
    if len(np.unique(train_y)) != len(classes):
        raise BrainTumorError("the linear probe needs training images of every class", "check the dataset's class folders")
    fits = []
    for c in (0.003, 0.01, 0.03, 0.1, 1.0):  # dedup seeds 0-2 of Sartaj at 128 px: 0.03, 0.03, 0.01
        probe = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        fits.append((log_loss(val_y, probe.predict_proba(val_x), labels=classes), c, probe))
    loss, c, probe = min(fits, key=lambda fit: fit[0])
    head = model.net.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(probe.coef_))
        head.bias.copy_(torch.from_numpy(probe.intercept_))
    accuracy = float((probe.predict(val_x) == val_y).mean())
    log(f"linear probe: validation accuracy {accuracy:.4f}, log-loss {loss:.4f} (C = {c:g})")
    return accuracy
