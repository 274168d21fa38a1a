"""`evaluation.metrics` against scikit-learn, against slow definitions, and on the cases sklearn leaves undefined."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as sk
from sklearn.calibration import calibration_curve

from pipeline.evaluation import metrics

SEEDS = range(12)


def random_case(seed: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """Labels with both classes and scores, rounded to 1 decimal when ``tied`` (many ties, also across classes)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[:2] = [True, False]
    scores = np.clip(rng.normal(size=n) * 0.25 + 0.4 + 0.2 * y, 0, 1)
    return y.astype(int), np.round(scores, 1) if tied else scores


CASES = [pytest.param(seed, tied, id=f"{'tied' if tied else 'random'}-{seed}") for seed in SEEDS for tied in (0, 1)]


# --- agreement with scikit-learn -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_auc_ap_brier_match_sklearn(seed, tied):
    y, s = random_case(seed, tied)
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
    assert metrics.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-9)
    assert metrics.brier_score(y, s) == pytest.approx(sk.brier_score_loss(y, s), abs=1e-9)


@pytest.mark.parametrize(("seed", "tied"), CASES)
@pytest.mark.parametrize("drop", [True, False])
def test_curves_match_sklearn(seed, tied, drop):
    y, s = random_case(seed, tied)
    for ours, theirs in zip(metrics.roc_curve(y, s, drop), sk.roc_curve(y, s, drop_intermediate=drop), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    ours = metrics.precision_recall_curve(y, s, drop)
    theirs = sk.precision_recall_curve(y, s, drop_intermediate=drop)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("seed", "tied"), CASES[:8])
def test_reliability_bins_match_sklearn_calibration_curve(seed, tied):
    y, s = random_case(seed, tied)
    s = np.r_[s, 0.0, 0.1, 0.2, 1.0]  # bin edges and the ends
    y = np.r_[y, 0, 1, 0, 1]
    curve = metrics.reliability_curve(y, s, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
    count, observed = np.array(curve.count), np.array(curve.observed, dtype=float)  # None (empty bin) -> NaN
    filled = count > 0
    np.testing.assert_allclose(observed[filled], prob_true, atol=1e-12)
    np.testing.assert_allclose(np.array(curve.mean_predicted, dtype=float)[filled], prob_pred, atol=1e-12)
    assert count.sum() == len(y) and len(curve.bin_edges) == 11
    assert all(value is None for value, n in zip(curve.observed, count, strict=True) if n == 0)


def test_perfect_and_constant_scores():
    y = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc(y, [0.5] * 4) == 0.5  # all tied: a coin toss, and sklearn agrees
    assert metrics.average_precision(y, [0.5] * 4) == pytest.approx(sk.average_precision_score(y, [0.5] * 4))


# --- undefined cases -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("y", [[0, 0, 0, 0], [1, 1, 1, 1]], ids=["all-negative", "all-positive"])
def test_one_class_gives_none_not_a_fake_number(y):
    s = [0.1, 0.4, 0.35, 0.8]
    assert metrics.roc_auc(y, s) is None
    assert metrics.roc_curve(y, s) is None
    assert metrics.precision_recall_curve(y, s) is None
    assert metrics.average_precision(y, s) is None
    assert metrics.choose_threshold(y, s) is None
    assert metrics.delong_test(y, s, s[::-1]) is None
    assert math.isfinite(metrics.brier_score(y, s))  # still defined
    at = metrics.metrics_at_threshold(y, s, 0.3)
    assert (at["sensitivity"] is None) == (sum(y) == 0)
    assert (at["specificity"] is None) == (sum(y) == 4)
    assert np.isnan(metrics.bootstrap_auc(np.c_[y], np.c_[s], n_resamples=5)).all()


def test_undefined_ratios_are_none():
    at = metrics.metrics_at_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    assert at["ppv"] is None  # nothing predicted positive
    assert (at["tp"], at["fp"], at["tn"], at["fn"]) == (0, 0, 2, 2)
    assert at["sensitivity"] == 0.0 and at["specificity"] == 1.0 and at["npv"] == 0.5 and at["f1"] == 0.0


@pytest.mark.parametrize(
    ("y", "s"),
    [([0, 2], [0.1, 0.2]), ([0, 1], [0.1]), ([0, 1], [0.1, np.nan]), ([[0, 1]], [[0.1, 0.2]])],
    ids=["not-binary", "lengths", "nan", "2-d"],
)
def test_bad_input_raises(y, s):
    with pytest.raises(ValueError):
        metrics.roc_auc(y, s)


# --- thresholds ------------------------------------------------------------------------------------------------


def test_youden_threshold_on_a_crafted_case():
    # negatives 0.1 0.2 0.3 0.55; positives 0.4 0.6 0.7 0.8 0.9.
    # At 0.6: sensitivity 4/5, specificity 1 -> J 0.80; at 0.4: 1 and 3/4 -> J 0.75; nothing else comes close.
    s = np.array([0.1, 0.2, 0.3, 0.55, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert metrics.choose_threshold(y, s) == 0.6
    assert metrics.choose_threshold(y, s, target_sensitivity=1.0) == 0.4
    assert metrics.choose_threshold(y, s, target_sensitivity=0.8) == 0.6
    assert metrics.choose_threshold(y, s, target_sensitivity=0.5) == 0.7  # 3 of 5 positives score >= 0.7
    at = metrics.metrics_at_threshold(y, s, 0.6)  # the image scoring exactly 0.6 counts as positive
    assert (at["tp"], at["fp"], at["tn"], at["fn"]) == (4, 0, 4, 1)
    assert at["sensitivity"] == 0.8 and at["specificity"] == 1.0 and at["ppv"] == 1.0
    assert at["npv"] == pytest.approx(0.8) and at["f1"] == pytest.approx(8 / 9)
    with pytest.raises(ValueError):
        metrics.choose_threshold(y, s, target_sensitivity=0)


def test_youden_ties_pick_the_highest_threshold():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])  # J = 0.75 at both 0.6 and 0.4
    assert metrics.choose_threshold(y, s) == 0.6


@pytest.mark.parametrize(("seed", "tied"), CASES[:6])
def test_youden_is_the_best_threshold_by_brute_force(seed, tied):
    y, s = random_case(seed, tied)
    chosen = metrics.choose_threshold(y, s)

    def youden(t):
        at = metrics.metrics_at_threshold(y, s, t)
        return at["sensitivity"] + at["specificity"] - 1

    assert youden(chosen) == pytest.approx(max(youden(t) for t in np.unique(s)), abs=1e-12)


# --- bootstrap -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tied"), CASES[:8])
def test_bootstrap_auc_equals_sklearn_on_each_resample(seed, tied):
    y, s = random_case(seed, tied)
    ys, ss = np.c_[y, 1 - y, y], np.c_[s, s, -s]  # the flipped columns exercise the minority-class swap
    n_resamples = 120  # more than one chunk
    aucs = metrics.bootstrap_auc(ys, ss, n_resamples=n_resamples, seed=seed)
    rows = np.concatenate(list(metrics.resample_indices(len(y), n_resamples, seed)))
    assert aucs.shape == (n_resamples, 3) and rows.shape == (n_resamples, len(y))
    for b in range(0, n_resamples, 7):
        for j in range(3):
            yb, sb = ys[rows[b], j], ss[rows[b], j]
            expected = sk.roc_auc_score(yb, sb) if 0 < yb.sum() < len(yb) else np.nan
            np.testing.assert_allclose(aucs[b, j], expected, atol=1e-9)


def test_bootstrap_is_seeded():
    y, s = random_case(0, tied=False)
    first = metrics.bootstrap_auc(np.c_[y], np.c_[s], n_resamples=60, seed=3)
    np.testing.assert_array_equal(first, metrics.bootstrap_auc(np.c_[y], np.c_[s], n_resamples=60, seed=3))
    assert not np.array_equal(first, metrics.bootstrap_auc(np.c_[y], np.c_[s], n_resamples=60, seed=4))


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 5000):
        y = (rng.random((n, 3)) < [0.1, 0.3, 0.5]).astype(int)
        s = np.round(1 / (1 + np.exp(-(rng.normal(size=y.shape) + y))), 2)
        aucs = metrics.bootstrap_auc(y, s, n_resamples=400, seed=1)
        for j in range(3):
            low, high = metrics.percentile_interval(aucs[:, j])
            assert low < metrics.roc_auc(y[:, j], s[:, j]) < high
            widths.append(high - low)
    small, large = np.array(widths[:3]), np.array(widths[3:])
    assert (large < small / 3).all()  # width ~ 1 / sqrt(n): 25x the images, about 1/5 the width


def test_rare_finding_drops_resamples_without_positives():
    y = np.zeros((40, 1), dtype=int)
    y[0] = 1
    s = np.linspace(0, 1, 40)[:, None]
    aucs = metrics.bootstrap_auc(y, s, n_resamples=500, seed=0)
    dropped = np.isnan(aucs).mean()
    assert 0.3 < dropped < 0.45  # P(the one positive is not drawn) = (39/40)^40 = 0.36
    assert metrics.percentile_interval(aucs[:, 0]) is not None
    assert metrics.percentile_interval(np.full(5, np.nan)) is None


def test_macro_mean_ignores_undefined_findings_per_resample():
    samples = np.array([[0.6, 0.8, np.nan], [np.nan, np.nan, np.nan], [0.5, 0.7, 0.9]])
    np.testing.assert_allclose(metrics.macro_mean(samples), [0.7, np.nan, 0.7])


def test_paired_bootstrap_difference():
    y, a = random_case(1, tied=True)
    b = np.clip(a + np.random.default_rng(0).normal(scale=0.2, size=a.shape), 0, 1)
    assert np.all(metrics.bootstrap_auc_difference(y, a, a, n_resamples=50) == 0)
    difference = metrics.bootstrap_auc_difference(y, a, b, n_resamples=50, seed=2)
    aucs = metrics.bootstrap_auc(np.c_[y, y], np.c_[a, b], n_resamples=50, seed=2)
    np.testing.assert_allclose(difference, aucs[:, 0] - aucs[:, 1])
    low, high = metrics.percentile_interval(difference)
    assert low <= metrics.roc_auc(y, a) - metrics.roc_auc(y, b) <= high


# --- DeLong ----------------------------------------------------------------------------------------------------


def delong_by_definition(y, a, b):
    """DeLong et al. (1988) straight from the definition: O(n_pos * n_neg) kernel, no ranks."""
    y = np.asarray(y).astype(bool)
    v10, v01 = [], []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # n_pos x n_neg
        v10.append(psi.mean(axis=1))  # per positive: share of negatives it beats
        v01.append(psi.mean(axis=0))  # per negative: share of positives beating it
    m, n = y.sum(), (~y).sum()
    aucs = [v.mean() for v in v10]
    s10 = np.array([[np.sum((v10[i] - aucs[i]) * (v10[j] - aucs[j])) / (m - 1) for j in (0, 1)] for i in (0, 1)])
    s01 = np.array([[np.sum((v01[i] - aucs[i]) * (v01[j] - aucs[j])) / (n - 1) for j in (0, 1)] for i in (0, 1)])
    s = s10 / m + s01 / n
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(variance)
    return aucs, variance, z, 2 * norm.sf(abs(z))


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_delong_matches_the_definition(seed, tied):
    y, a = random_case(seed, tied)
    rng = np.random.default_rng(seed + 100)
    b = np.clip(a + rng.normal(scale=0.3, size=a.shape), 0, 1)
    b = np.round(b, 1) if tied else b
    result = metrics.delong_test(y, a, b)
    (auc_a, auc_b), variance, z, p_value = delong_by_definition(y, a, b)
    assert result.auc_a == pytest.approx(auc_a, abs=1e-12) and result.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert result.auc_a == pytest.approx(sk.roc_auc_score(y, a), abs=1e-12)
    assert result.difference == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert result.variance == pytest.approx(variance, rel=1e-9)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-6, abs=1e-12)


def test_delong_identical_scores_and_tiny_classes():
    y, a = random_case(3, tied=False)
    same = metrics.delong_test(y, a, a.copy())
    assert (same.difference, same.variance, same.z, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    one_positive = metrics.delong_test([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.1, 0.9, 0.2, 0.3])
    assert one_positive.difference == 1.0 and one_positive.p_value is None


def test_delong_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(7)
    y = (rng.random(2000) < 0.3).astype(int)
    good = rng.normal(size=2000) + 1.5 * y
    worse = rng.normal(size=2000) + 0.5 * y
    twin = good + rng.normal(scale=0.01, size=2000)
    assert metrics.delong_test(y, good, worse).p_value < 1e-6
    assert metrics.delong_test(y, good, twin).p_value > 0.01


def test_midranks():
    ranks = metrics._midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))
    np.testing.assert_array_equal(ranks, [4, 1, 4, 2, 4])
    for values in itertools.product([0, 1], repeat=4):
        x = np.array(values, dtype=float)
        expected = [np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x]
        np.testing.assert_array_equal(metrics._midranks(x), expected)
