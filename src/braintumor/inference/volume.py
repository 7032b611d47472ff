"""A per-volume summary of the slice predictions of a NIfTI volume.

The model classifies 2-D slices; a volume's slices are predicted one by one
(`braintumor.data.nifti`, `Predictor.predict`). `summarise_volume` sums them up: the tumour class
with the most confidently predicted slices, the slices predicted per class, and the slice
numbers that drove the summary. It is **slice-level evidence, not a diagnosis**: the model has
never seen a whole volume, and neighbouring slices are not independent evidence.

Examples
--------
>>> from braintumor.inference import Predictor                       # doctest: +SKIP
>>> from braintumor.inference.volume import summarise_volumes         # doctest: +SKIP
>>> for summary in summarise_volumes(Predictor().predict(["brain.nii.gz"])):   # doctest: +SKIP
...     print(summary.text)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from braintumor.inference.predictor import NOT_BRAIN_MRI, Prediction

NO_TUMOR = "no_tumor"
CONFIDENCE = 0.8  # a slice counts as tumour evidence at this probability of its class or above
NOTICE = "slice-level evidence, not a diagnosis"


@dataclass
class VolumeSummary:
    """What the slices of one volume say, taken together.

    Attributes
    ----------
    path : str
        The volume.
    label : str or None
        The tumour class with the most slices predicted at `confidence` or above (ties: the
        larger sum of their probabilities); ``"no_tumor"`` when no slice is such tumour evidence;
        ``"not_brain_mri"`` when every slice was rejected as out-of-distribution; None without
        predicted slices.
    class_counts : dict
        Slices per predicted label (every class, and ``not_brain_mri`` when any was rejected).
    evidence_slices : list of int
        The numbers (from 1 along `axis`) of the slices that drove `label`: its confident
        slices, most probable first; empty for ``no_tumor`` and ``not_brain_mri``.
    predicted, skipped : int
        Slices predicted; slices left out for too little brain (None when unknown).
    axis : int or None
        The array axis the slices were taken along.
    confidence : float
        The probability a tumour slice needed to count as evidence.
    notice : str
        ``"slice-level evidence, not a diagnosis"``.
    text : str
        The summary in one line.
    """

    path: str
    label: str | None
    class_counts: dict = field(default_factory=dict)
    evidence_slices: list = field(default_factory=list)
    predicted: int = 0
    skipped: int | None = None
    axis: int | None = None
    confidence: float = CONFIDENCE
    notice: str = NOTICE
    text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def is_evidence(prediction: Prediction, confidence: float = CONFIDENCE) -> bool:
    """Whether a slice counts as tumour evidence: accepted (or no detector), predicted as a
    tumour class, with at least `confidence` probability."""
    label = prediction.label
    if prediction.error or label in (None, NO_TUMOR, NOT_BRAIN_MRI) or prediction.accepted is False:
        return False
    return prediction.probabilities.get(label, 0.0) >= confidence


def summarise_volume(predictions: list[Prediction], confidence: float = CONFIDENCE) -> VolumeSummary:
    """Summarise the slice predictions of one volume (the records `Predictor.predict` gives
    for it; error records are ignored).

    Parameters
    ----------
    predictions : list of Prediction
        The slices of one volume.
    confidence : float
        The probability a tumour slice needs to count as evidence (default 0.8).

    Returns
    -------
    VolumeSummary
        Slice-level evidence, not a diagnosis.
    """
    slices = [p for p in predictions if p.error is None and p.label is not None]
    path = predictions[0].path if predictions else ""
    axis = next((p.axis for p in slices if p.axis is not None), None)
    total = next((p.slices for p in slices if p.slices is not None), None)
    skipped = None if total is None else max(total - len(slices), 0)
    counts = _class_counts(slices)
    label, evidence = _leading_class(slices, confidence)
    summary = VolumeSummary(path, label, counts, evidence, len(slices), skipped, axis, confidence)
    summary.text = _describe(summary)
    return summary


def summarise_volumes(results: list[Prediction], confidence: float = CONFIDENCE) -> list[VolumeSummary]:
    """A `VolumeSummary` of every NIfTI volume among `results` (the records that carry a slice
    axis), in the order the volumes first appear."""
    by_path: dict[str, list[Prediction]] = {}
    for result in results:
        if result.axis is not None:
            by_path.setdefault(result.path, []).append(result)
    return [summarise_volume(rows, confidence) for rows in by_path.values()]


def _class_counts(slices: list[Prediction]) -> dict:
    """Slices per label: every class the model knows, in its order, then ``not_brain_mri``."""
    classes = list(slices[0].probabilities) if slices else []
    counts = {c: 0 for c in classes}
    for p in slices:
        counts[p.label] = counts.get(p.label, 0) + 1
    return counts


def _leading_class(slices: list[Prediction], confidence: float) -> tuple[str | None, list[int]]:
    """The summary's class and the slice numbers of its evidence, most probable first."""
    if not slices:
        return None, []
    evidence: dict[str, list[Prediction]] = {}
    for p in slices:
        if is_evidence(p, confidence):
            evidence.setdefault(p.label, []).append(p)
    if not evidence:
        return (NOT_BRAIN_MRI if all(p.accepted is False for p in slices) else NO_TUMOR), []

    def strength(label: str) -> tuple[int, float]:
        return len(evidence[label]), sum(p.probabilities[label] for p in evidence[label])

    label = max(evidence, key=strength)
    ranked = sorted(evidence[label], key=lambda p: -p.probabilities[label])
    return label, [p.frame for p in ranked]


def _describe(s: VolumeSummary) -> str:
    """The summary in one line, ending with the notice."""
    where = f" along axis {s.axis}" if s.axis is not None else ""
    skipped = f"; {s.skipped} skipped (too little brain)" if s.skipped else ""
    head = f"{s.predicted} slices predicted{where}{skipped}"
    counts = ", ".join(f"{label} {n}" for label, n in s.class_counts.items())
    if s.label is None:
        body = "no slice predicted"
    elif s.label == NOT_BRAIN_MRI:
        body = "not_brain_mri: every slice was rejected as unlike the brain MRI slices the model knows"
    elif s.label == NO_TUMOR:
        body = f"no_tumor: no slice shows a tumour class with {100 * s.confidence:.0f}% probability or more"
    else:
        body = (f"{s.label}: {len(s.evidence_slices)} slice(s) at {100 * s.confidence:.0f}% or more "
                f"(slices {format_numbers(s.evidence_slices)})")
    return f"{body}; {head}; per class: {counts} — {s.notice}"


def format_numbers(numbers: list[int]) -> str:
    """Slice numbers as sorted ranges: ``[9, 3, 4, 5]`` -> ``"3-5, 9"``."""
    ordered = sorted(set(numbers))
    parts, start = [], None
    for i, n in enumerate(ordered):
        if start is None:
            start = n
        if i + 1 == len(ordered) or ordered[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(parts)
