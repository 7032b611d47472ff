"""The lessons: each demonstrates one idea, writes a figure and a JSON result, and states its finding.

Run one from Python with ``run_lesson("xor")`` or from the shell with ``braintumor lesson xor``.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from braintumor.errors import BrainTumorError

# lesson name -> (module, one-line description)
LESSONS: dict[str, tuple[str, str]] = {
    "xor": ("xor", "a single-layer perceptron cannot fit XOR; two layers can, built by hand or trained"),
    "activations": ("activations", "sigmoid, tanh, ReLU, GELU, softmax and their derivatives"),
    "backprop": ("backprop", "hand-derived gradients of a two-layer MLP vs the computation graph"),
    "architecture": ("architecture", "depth x width sweep chosen on validation accuracy"),
    "gradient-descent": ("gradient_descent", "batch vs stochastic vs mini-batch gradient descent"),
    "initialization": ("initialization", "zero init never breaks symmetry; too small and too large scales"),
    "vanishing-gradients": ("vanishing", "per-layer gradient norms: deep sigmoid vs ReLU + He"),
    "regularization": ("regularization", "overfitting, dropout and early stopping"),
    "convolution": ("convolution", "the original study's 5x5 example and edge filters on an MRI slice"),
    "handcrafted": ("handcrafted", "HOG + LBP features with a linear classifier on the brain MRI data"),
    "mri-from-scratch": ("mri_from_scratch", "a NumPy CNN trained on the brain MRI data, compared with the others"),
}
DATA_LESSONS = ("convolution", "handcrafted", "mri-from-scratch")


def _jsonable(value):
    """Convert NumPy scalars/arrays and tuples so `json.dumps` accepts them."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_lesson(name: str, out: str | Path | None = None, quick: bool = False, data: str | Path | None = None, seed: int = 0,
               progress: bool = False, log=print) -> dict:
    """Run lesson `name`, write ``NAME.png`` and ``result.json`` into `out`, return the result.

    Parameters
    ----------
    name : str
        A key of `LESSONS`.
    out : path, optional
        Output folder; default ``runs/lessons/NAME``.
    quick : bool
        Smaller settings that run in a second or two (used by the tests).
    data : path, optional
        Dataset folder for the lessons that use the brain MRI data (`DATA_LESSONS`).
    seed : int
        Seed of every random choice (and of the data split).

    Returns
    -------
    dict
        The lesson's numbers, with ``finding`` (one sentence), ``figure``, ``seconds``.
    """
    if name not in LESSONS:
        raise BrainTumorError(f"unknown lesson {name!r}", "choose one of: " + ", ".join(LESSONS))
    out = Path(out) if out is not None else Path("runs") / "lessons" / name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrainTumorError(f"cannot create the output folder {out}: {exc.strerror}", "pass --out to a writable folder") from None
    module = importlib.import_module(f".{LESSONS[name][0]}", __name__)
    start = time.perf_counter()
    try:
        result, fig = module.run(quick=quick, data=data, seed=seed, out=out, progress=progress, log=log)
    except ModuleNotFoundError as exc:
        if exc.name != "skimage":
            raise
        raise BrainTumorError(f"the {name} lesson needs scikit-image, which is not installed",
                              "pip install 'braintumor[lessons]'") from None
    result = {"lesson": name, "quick": quick, "seed": seed, **result, "seconds": time.perf_counter() - start}
    figure_path = out / f"{name}.png"
    fig.suptitle(f"{name}: {LESSONS[name][1]}", fontsize=10)
    fig.savefig(figure_path)
    result["figure"] = str(figure_path)
    (out / "result.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return result
