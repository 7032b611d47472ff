import numpy as np
import pytest
from sklearn.metrics import f1_score

from braintumor.metrics.stats import accuracy_of, bootstrap_ci, macro_f1_of, occurring_classes, one_vs_rest_auc, paired_difference, resampled_confusions


def _frequencies(values: np.ndarray) -> dict[float, float]:
    keys, counts = np.unique(np.round(values, 6), return_counts=True)
    return {float(k): c / len(values) for k, c in zip(keys, counts)}


def test_two_images_one_right_gives_the_exact_resampling_distribution():
    # Resamples of (right, wrong): both right 1/4, one each 1/2, both wrong 1/4.
    conf = resampled_confusions([0, 1], [0, 0], n_classes=2, resamples=40_000, seed=1)
    acc = _frequencies(accuracy_of(conf))
    assert acc.keys() == {0.0, 0.5, 1.0}
    assert acc[0.0] == pytest.approx(0.25, abs=0.01) and acc[0.5] == pytest.approx(0.5, abs=0.01)
    # macro-F1 by hand: (right, right) -> F1 = (1 + 0) / 2; (wrong, wrong) -> 0;
    # one each -> class 0 has tp 1, fp 1 -> 2/3, class 1 has 0 -> 1/3.
    f1 = _frequencies(macro_f1_of(conf))
    assert f1.keys() == {0.0, round(1 / 3, 6), 0.5}
    assert f1[0.5] == pytest.approx(0.25, abs=0.01) and f1[round(1 / 3, 6)] == pytest.approx(0.5, abs=0.01)
    assert bootstrap_ci([0, 1], [0, 0], 2, resamples=4000) == {"accuracy": [0.0, 1.0], "macro_f1": [0.0, 0.5]}


def test_perfect_and_hopeless_predictions_have_degenerate_intervals():
    labels = np.arange(40) % 4
    assert bootstrap_ci(labels, labels, 4) == {"accuracy": [1.0, 1.0], "macro_f1": [1.0, 1.0]}
    assert bootstrap_ci(labels, (labels + 1) % 4, 4)["accuracy"] == [0.0, 0.0]


def test_accuracy_interval_matches_the_binomial_approximation():
    n, right = 400, 360  # accuracy 0.9, standard error sqrt(0.9 * 0.1 / 400) = 0.015
    labels = np.zeros(n, dtype=int)
    pred = np.where(np.arange(n) < right, 0, 1)
    low, high = bootstrap_ci(labels, pred, 2, resamples=5000)["accuracy"]
    assert low == pytest.approx(0.9 - 1.96 * 0.015, abs=0.006)
    assert high == pytest.approx(0.9 + 1.96 * 0.015, abs=0.006)


def test_resampled_metrics_agree_with_scikit_learn_on_the_full_sample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    pred = np.where(rng.random(50) < 0.7, labels, rng.integers(0, 4, 50))
    labels[labels == 3] = 2  # class 3 never true: sklearn counts its F1 as 0 when listed
    cm = np.zeros((4, 4))
    np.add.at(cm, (labels, pred), 1)
    expected = f1_score(labels, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert macro_f1_of(cm) == pytest.approx(expected)
    assert accuracy_of(cm) == pytest.approx((labels == pred).mean())


def test_macro_f1_over_the_occurring_classes_is_scikit_learns_default():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)  # classes 0-1 true; 2 predicted now and then; 3 never seen
    pred = np.where(rng.random(60) < 0.8, labels, 2)
    cm = np.zeros((4, 4))
    np.add.at(cm, (labels, pred), 1)
    present = occurring_classes(labels, pred, 4)
    assert present.tolist() == [True, True, True, False]
    assert macro_f1_of(cm, present) == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
    # one class, all right: 1, in every resample, where averaging all four classes would say 0.25
    one = np.full(30, 3)
    assert bootstrap_ci(one, one, 4)["macro_f1"] == [1.0, 1.0]


def test_same_seed_same_interval():
    labels = np.arange(60) % 3
    pred = np.where(np.arange(60) % 7 == 0, (labels + 1) % 3, labels)
    assert bootstrap_ci(labels, pred, 3, seed=5) == bootstrap_ci(labels, pred, 3, seed=5)


@pytest.mark.parametrize(
    "labels, pred, message",
    [([], [], "empty"), ([0, 1], [0], "equal length"), ([0, 5], [0, 1], "class indices"), ([0, -1], [0, 1], "class indices")],
)
def test_bad_input(labels, pred, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(labels, pred, 4)


def test_one_vs_rest_auc_by_hand():
    # class 1 scores: negatives 0.1, 0.4; positives 0.35, 0.8 -> 3 of 4 pairs ordered: AUC 0.75
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1, np.zeros(4)], axis=1)
    auc = one_vs_rest_auc([0, 0, 1, 1], probs)
    assert auc[0] == pytest.approx(0.75) and auc[1] == pytest.approx(0.75)
    assert auc[2] is None  # class 2 never occurs


def test_singleton_groups_give_exactly_the_image_bootstrap():
    labels = np.arange(60) % 3
    pred = np.where(np.arange(60) % 7 == 0, (labels + 1) % 3, labels)
    assert bootstrap_ci(labels, pred, 3, groups=np.arange(60)) == bootstrap_ci(labels, pred, 3)


def test_copies_resampled_together_count_as_one_test_case():
    # 50 distinct images, 40 right; each copied 4 times with the same prediction. Resampling the
    # copies' groups is the bootstrap of the 50 distinct images; resampling the 200 files one by
    # one pretends to know the accuracy twice as precisely (interval half as wide).
    labels = np.zeros(50, dtype=int)
    pred = np.where(np.arange(50) < 40, 0, 1)
    copies = np.repeat(np.arange(50), 4)
    distinct = bootstrap_ci(labels, pred, 2)
    grouped = bootstrap_ci(labels[copies], pred[copies], 2, groups=copies)
    assert grouped == distinct
    low, high = bootstrap_ci(labels[copies], pred[copies], 2)["accuracy"]
    assert (high - low) == pytest.approx((distinct["accuracy"][1] - distinct["accuracy"][0]) / 2, rel=0.2)


def test_group_labels_may_be_any_values_and_groups_of_unequal_size_weigh_by_size():
    # Two groups: 3 right copies ("a") and 1 wrong image ("b"). Each resample draws two groups:
    # (a, a) -> 1, (b, b) -> 0, one each -> 3/4 right, with probabilities 1/4, 1/4, 1/2.
    conf = resampled_confusions([0, 0, 0, 0], [0, 0, 0, 1], 2, resamples=40_000, seed=3, groups=["a", "a", "a", "b"])
    acc = _frequencies(accuracy_of(conf))
    assert acc.keys() == {0.0, 0.75, 1.0}
    assert acc[0.75] == pytest.approx(0.5, abs=0.01) and acc[0.0] == pytest.approx(0.25, abs=0.01)


def test_groups_must_match_the_images():
    with pytest.raises(ValueError, match="one group per item"):
        bootstrap_ci([0, 1, 1], [0, 1, 0], 2, groups=[0, 1])


def test_paired_difference_by_hand():
    # 10 images: A right on 0-7, B on 0-5 and 8-9; each is right on 2 images the other gets wrong.
    labels = np.zeros(10, dtype=int)
    a = np.array([0] * 8 + [1] * 2)
    b = np.array([0] * 6 + [1] * 2 + [0] * 2)
    result = paired_difference(labels, a, b)
    assert result["difference"] == 0.0 and result["only_a_right"] == 2 and result["only_b_right"] == 2
    assert result["mcnemar_p"] == pytest.approx(1.0)
    low, high = result["difference_ci"]
    assert low < 0 < high
    # B right on 5 images that A misses, never the reverse: p = 2 * 0.5^5, and every resample favours B or ties
    b_better = paired_difference(np.zeros(20, dtype=int), np.array([0] * 15 + [1] * 5), np.zeros(20, dtype=int))
    assert b_better["difference"] == pytest.approx(0.25) and b_better["mcnemar_p"] == pytest.approx(0.0625)
    assert b_better["difference_ci"][0] > 0


def test_paired_difference_resamples_copies_together():
    labels = np.zeros(30, dtype=int)
    a = np.where(np.arange(30) < 20, 0, 1)
    b = np.where((np.arange(30) < 15) | (np.arange(30) >= 24), 0, 1)
    copies = np.repeat(np.arange(30), 4)
    distinct = paired_difference(labels, a, b)
    grouped = paired_difference(labels[copies], a[copies], b[copies], groups=copies)
    assert grouped["difference_ci"] == pytest.approx(distinct["difference_ci"])
    one_by_one = paired_difference(labels[copies], a[copies], b[copies])
    assert one_by_one["mcnemar_p"] < distinct["mcnemar_p"]  # copies counted as evidence
    width = lambda r: r["difference_ci"][1] - r["difference_ci"][0]  # noqa: E731
    assert width(one_by_one) < 0.7 * width(grouped)
