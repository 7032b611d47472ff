import numpy as np
import pytest
from scipy.special import softmax

from braintumor.metrics.calibration import (
    as_logits,
    ece_if_calibrated,
    ece_interval,
    expected_calibration_error,
    fit_temperature,
    nll,
    plot_reliability,
    reliability_bins,
    with_temperature,
)


def test_ece_by_hand():
    # Two predictions at confidence 0.9, one right: |0.5 - 0.9| = 0.4.
    # Two at 0.6, both right: |1.0 - 0.6| = 0.4. Each bin holds half: ECE = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)  # 15 bins: the same grouping
    table = reliability_bins(probs, labels, bins=10)
    filled = [b for b in table if b["count"]]
    assert [(b["high"], b["count"], b["accuracy"]) for b in filled] == [(pytest.approx(0.6), 2, 1.0), (pytest.approx(0.9), 2, 0.5)]
    assert sum(b["count"] for b in table) == 4 and len(table) == 10


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


def test_ece_weights_bins_by_their_share():
    # 3 predictions at 0.95, all right (gap 0.05); 1 at 0.55, wrong (gap 0.55): 0.75*0.05 + 0.25*0.55
    probs = np.array([[0.95, 0.05]] * 3 + [[0.55, 0.45]])
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.75 * 0.05 + 0.25 * 0.55)


def test_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    table = reliability_bins(np.array([[0.6, 0.4]]), np.array([0]), bins=5)
    assert [b["count"] for b in table] == [0, 0, 1, 0, 0] and table[2]["high"] == pytest.approx(0.6)


def test_ece_interval_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2, (300, 4)), axis=1)
    labels = rng.integers(0, 4, 300)
    ece = expected_calibration_error(probs, labels)
    low, high = ece_interval(probs, labels)
    assert low <= ece <= high and high - low > 0.01
    assert ece_interval(probs, labels) == [low, high]
    # a resample of images that are all right at confidence 1 is always perfectly calibrated
    assert ece_interval(np.tile([1.0, 0.0], (5, 1)), np.zeros(5, dtype=int)) == [0.0, 0.0]


def test_ece_interval_resamples_copies_together():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 2, (80, 4)), axis=1)
    labels = rng.integers(0, 4, 80)
    copies = np.repeat(np.arange(80), 3)  # every image three times, same prediction
    assert ece_interval(probs[copies], labels[copies], groups=copies) == ece_interval(probs, labels)
    low, high = ece_interval(probs[copies], labels[copies])
    grouped_low, grouped_high = ece_interval(probs, labels)
    assert high - low < 0.75 * (grouped_high - grouped_low)  # one by one, copies look like evidence


def test_ece_if_calibrated_matches_the_single_bin_formula():
    # One bin at confidence p, n images right with probability p: E|mean - p| ~ sqrt(p(1-p)/n) * sqrt(2/pi).
    p, n = 0.9, 400
    probs = np.tile([p, 1 - p], (n, 1))
    floor = ece_if_calibrated(probs, resamples=4000)
    assert floor["mean"] == pytest.approx(np.sqrt(p * (1 - p) / n) * np.sqrt(2 / np.pi), rel=0.06)
    assert floor["p95"] > floor["mean"]
    # more images, smaller bias; certain predictions, none
    assert ece_if_calibrated(np.tile([p, 1 - p], (40 * n, 1)))["mean"] < floor["mean"] / 4
    assert ece_if_calibrated(np.tile([1.0, 0.0], (10, 1))) == {"mean": 0.0, "p95": 0.0}


def test_ece_if_calibrated_draws_copies_together():
    rng = np.random.default_rng(2)
    probs = softmax(rng.normal(0, 2, (50, 4)), axis=1)
    copies = np.repeat(np.arange(50), 4)  # every image four times, same confidence
    distinct = ece_if_calibrated(probs)
    # copies drawn together: a calibrated model measures on 200 images what it does on the 50
    assert ece_if_calibrated(probs[copies], groups=copies) == pytest.approx(distinct)
    # drawn one by one, the 200 images look like four times the evidence: about half the bias
    assert ece_if_calibrated(probs[copies])["mean"] < 0.7 * distinct["mean"]
    # singleton groups numbered in order are the plain simulation, draw for draw
    assert ece_if_calibrated(probs, groups=np.arange(50)) == distinct
    with pytest.raises(ValueError, match="one group per item"):
        ece_if_calibrated(probs, groups=np.arange(49))


def _miscalibrated(scale: float, n: int = 4000, seed: int = 0):
    """Labels drawn from softmax(z); the 'model' reports logits scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(z, axis=1)])
    return scale * z, labels


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_scaling_recovers_the_miscalibration_and_lowers_nll(scale):
    logits, labels = _miscalibrated(scale)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(scale, rel=0.12)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.02
    probs = softmax(logits, axis=1)
    assert expected_calibration_error(with_temperature(probs, t), labels) < expected_calibration_error(probs, labels) / 2


def test_temperature_keeps_the_winner_and_can_be_undone():
    probs = softmax(np.random.default_rng(1).normal(0, 2, (20, 4)), axis=1)
    sharp = with_temperature(probs, 0.5)
    assert np.array_equal(sharp.argmax(1), probs.argmax(1))
    assert np.allclose(with_temperature(sharp, 1 / 0.5), probs)
    assert np.allclose(softmax(as_logits(probs), axis=1), probs)


def test_bad_input():
    with pytest.raises(ValueError, match="N x C"):
        expected_calibration_error(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="no samples"):
        fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        reliability_bins(np.full((1, 2), 0.5), [0], bins=0)
    with pytest.raises(ValueError, match="level"):
        ece_interval(np.full((2, 2), 0.5), [0, 1], level=1.5)
    with pytest.raises(ValueError, match="non-empty N x C"):
        ece_if_calibrated(np.zeros((0, 2)))


def test_reliability_diagram_is_a_png(tmp_path):
    logits, labels = _miscalibrated(2.0, n=300)
    plot_reliability(reliability_bins(softmax(logits, axis=1), labels), tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
