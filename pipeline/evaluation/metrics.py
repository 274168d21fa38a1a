"""Metrics for one finding at a time, and bootstrap intervals for many: plain NumPy, no TensorFlow.

The curves and areas match scikit-learn's ``roc_curve``, ``roc_auc_score``, ``precision_recall_curve`` and
``average_precision_score`` (to floating-point rounding, ties included); the module adds what sklearn lacks for
a clinical evaluation: bootstrap confidence intervals over images, DeLong's test for two AUCs on the same
images, operating thresholds and calibration.

Conventions: ``y_true`` holds 0/1 labels, ``y_score`` probabilities (higher means more likely positive), and
a prediction is positive iff ``y_score >= threshold``. A metric the data cannot define (an AUC without
positive images, a PPV without predicted positives) is ``None``, never NaN or a made-up 0.5; in arrays of
bootstrap results it is NaN, and those resamples are dropped from the intervals.

About 500 lines, kept whole: every metric here shares these conventions and the vectorised bootstrap, and
nothing in it depends on the rest of the project; split, each part would restate them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Resamples drawn and counted together: big enough for NumPy to amortise its overhead, small enough that
# the (chunk x n_images) index array stays in cache-friendly tens of megabytes.
_BOOTSTRAP_CHUNK = 50


def _binary(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one finding's labels and scores; return them as bool and float arrays."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"y_true and y_score must be 1-D of the same length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("y_score must be finite")
    return y.astype(bool), s


def has_both_classes(y_true: np.ndarray) -> bool:
    """Whether ``y_true`` has at least one positive and one negative, so that AUC and AP are defined."""
    y = np.asarray(y_true).astype(bool)
    return bool(y.any() and not y.all())


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _binary_clf_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive counts at each distinct score, taken as threshold, from high to low."""
    order = np.argsort(s, kind="stable")[::-1]
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_tie]
    fps = 1 + last_of_tie - tps
    return fps, tps, s[last_of_tie]


def roc_curve(
    y_true: np.ndarray, y_score: np.ndarray, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """ROC curve as scikit-learn's ``roc_curve`` computes it.

    Parameters
    ----------
    y_true, y_score
        Labels (0/1) and scores of one finding.
    drop_intermediate
        Drop points collinear with their neighbours (sklearn's default): the plotted curve and its area
        are unchanged.

    Returns
    -------
    (fpr, tpr, thresholds) or None
        Increasing rates; ``thresholds[0]`` is ``inf`` so that the curve starts at (0, 0). None when
        ``y_true`` lacks a class.
    """
    y, s = _binary(y_true, y_score)
    if not has_both_classes(y):
        return None
    fps, tps, thresholds = _binary_clf_curve(y, s)
    if drop_intermediate and fps.size > 2:
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of the 1-D ``x``, ties given the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], x.size] - 1
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = ((first + last) / 2 + 1)[np.cumsum(starts) - 1]
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve, as ``sklearn.metrics.roc_auc_score``; None when ``y_true`` lacks a class.

    Computed as the Mann-Whitney statistic from midranks, which equals the trapezoidal area of the ROC curve:
    the probability that a random positive scores above a random negative, ties counting one half.
    """
    y, s = _binary(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _midranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(
    y_true: np.ndarray, y_score: np.ndarray, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Precision-recall curve as scikit-learn's ``precision_recall_curve`` computes it.

    Parameters
    ----------
    y_true, y_score
        Labels (0/1) and scores of one finding.
    drop_intermediate
        Keep only the first and last point of each vertical run (same recall), as sklearn's option of that
        name does: the plotted staircase and the average precision are unchanged.

    Returns
    -------
    (precision, recall, thresholds) or None
        Recall decreasing to a final point (recall 0, precision 1) that has no threshold, so
        ``len(thresholds) == len(precision) - 1``. None when ``y_true`` lacks a class.
    """
    y, s = _binary(y_true, y_score)
    if not has_both_classes(y):
        return None
    fps, tps, thresholds = _binary_clf_curve(y, s)
    if drop_intermediate and fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    precision = tps / (tps + fps)  # tps + fps >= 1: every threshold is a score that some image has
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Average precision, as ``sklearn.metrics.average_precision_score``; None when ``y_true`` lacks a class.

    The step-wise (not interpolated) area under the precision-recall curve: the sum over thresholds of the
    precision there times the recall gained there.
    """
    curve = precision_recall_curve(y_true, y_score)
    if curve is None:
        return None
    precision, recall, _ = curve
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared difference between predicted probability and outcome (0 is perfect)."""
    y, p = _binary(y_true, y_prob)
    return float(np.mean((p - y) ** 2))


@dataclass
class Reliability:
    """One finding's reliability curve over equal-width probability bins from 0 to 1, as metrics.json stores it.

    Per bin: the mean prediction, the observed share of positives (both None for an empty bin) and the count.
    The one type for a reliability curve: `reliability_curve` makes it, `results.Summary` stores it.
    """

    mean_predicted: list[float | None]
    observed: list[float | None]
    count: list[int]

    @property
    def bin_edges(self) -> np.ndarray:
        """The ``n_bins + 1`` bin edges from 0 to 1."""
        return np.linspace(0.0, 1.0, len(self.count) + 1)


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> Reliability:
    """Calibration in ``n_bins`` equal-width probability bins, binned as ``sklearn.calibration.calibration_curve``.

    Bins are right-closed except the first: (0.1, 0.2] and [0, 0.1]. Unlike sklearn, empty bins are kept (as
    None with count 0) so that every finding has the same bins.
    """
    y, p = _binary(y_true, y_prob)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("y_prob must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, weights=p, minlength=n_bins) / count
        observed = np.bincount(bins, weights=y, minlength=n_bins) / count

    def floats(values: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in values]

    return Reliability(floats(mean_predicted), floats(observed), count.tolist())


def choose_threshold(y_true: np.ndarray, y_score: np.ndarray, target_sensitivity: float | None = None) -> float | None:
    """An operating threshold chosen on validation data, to be applied unchanged to test data.

    Parameters
    ----------
    y_true, y_score
        Validation labels (0/1) and scores of one finding.
    target_sensitivity
        None: maximise Youden's J = sensitivity + specificity - 1 (of equally good thresholds, the highest).
        A number in (0, 1]: the highest threshold whose sensitivity reaches it, i.e. the most specific one.

    Returns
    -------
    float or None
        One of the scores, so that the image with that score is predicted positive; None when ``y_true``
        lacks a class.
    """
    y, s = _binary(y_true, y_score)
    if not has_both_classes(y):
        return None
    fps, tps, thresholds = _binary_clf_curve(y, s)
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    if target_sensitivity is None:
        best = int(np.argmax(tpr - fpr))
    elif 0 < target_sensitivity <= 1:
        # tpr rises along the thresholds; a small tolerance so that 0.9 is reached by 9 of 10 positives
        best = int(np.argmax(tpr >= target_sensitivity - 1e-12))
    else:
        raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
    return float(thresholds[best])


def metrics_at_threshold(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, int | float | None]:
    """Confusion counts and the rates derived from them, predicting positive iff ``y_score >= threshold``.

    Returns
    -------
    dict
        ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1`` (None where the denominator is 0) and the
        counts ``tp``, ``fp``, ``tn``, ``fn``.
    """
    y, s = _binary(y_true, y_score)
    predicted = s >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = y.size - tp - fp - fn
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _bootstrap_codes(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, int]:
    """Code each image so that counting codes in a resample gives its AUC (see `bootstrap_auc`).

    With ``u`` the ``m`` distinct scores of the positives, a positive gets code ``k`` when its score is
    ``u[k]``; a negative gets ``m + 2k`` when it scores between ``u[k-1]`` and ``u[k]`` and ``m + 2k + 1`` when
    it ties ``u[k]``. The AUC is symmetric under swapping the classes and negating the scores, so the smaller
    class plays the positives: fewer codes, less work.
    """
    if 2 * y.sum() > y.size:
        y, s = ~y, -s
    u = np.unique(s[y])
    m = u.size
    codes = np.empty(y.size, dtype=np.intp)
    codes[y] = np.searchsorted(u, s[y])
    negatives = s[~y]
    below = np.searchsorted(u, negatives)  # number of distinct positive scores under each negative
    ties = u[np.minimum(below, m - 1)] == negatives
    codes[~y] = m + 2 * below + ties
    return codes, m


def _auc_from_counts(counts: np.ndarray, m: int) -> np.ndarray:
    """AUCs of resamples from their code counts (rows: resamples); NaN where a class is absent."""
    positives, negatives = counts[:, :m], counts[:, m:]
    negatives_up_to = np.cumsum(negatives, axis=1)
    # Twice the Mann-Whitney count: each positive beats the negatives below it (2 each) and ties (1 each).
    twice_wins = 2 * negatives_up_to[:, 0 : 2 * m : 2] + negatives[:, 1::2]
    numerator = np.einsum("ij,ij->i", positives, twice_wins)
    pairs = 2 * positives.sum(axis=1) * negatives_up_to[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, numerator / pairs, np.nan)


def bootstrap_auc(y_true: np.ndarray, y_score: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """AUROC of every column on bootstrap resamples of the rows (images), all columns sharing each resample.

    Parameters
    ----------
    y_true, y_score
        (n_images, n_findings) labels and scores. To compare two models on paired resamples, stack their
        scores side by side (and the labels twice).
    n_resamples, seed
        Number of resamples and the seed of ``np.random.default_rng``: same inputs and seed, same result.

    Returns
    -------
    numpy.ndarray
        (n_resamples, n_findings) AUCs; NaN where the resample has no positive or no negative image.

    Notes
    -----
    A resample is a vector of multiplicities over the images, and its AUC a weighted Mann-Whitney count.
    Instead of ranking each resample, each image is coded once by where its score falls among the distinct
    positive scores (`_bootstrap_codes`); one ``bincount`` of the resampled codes then gives, per resample,
    the positives at each score and the negatives between and at them, and a cumulative sum over those counts
    gives the (tie-aware) AUC. The cost is O(n_images) per resample and finding, with no sorting.
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true and y_score must be 2-D of the same shape, got {y.shape} and {s.shape}")
    n, k = y.shape
    aucs = np.full((n_resamples, k), np.nan)
    columns = [j for j in range(k) if has_both_classes(y[:, j])]
    coded = {j: _bootstrap_codes(*_binary(y[:, j], s[:, j])) for j in columns}
    start = 0
    for resampled in resample_indices(n, n_resamples, seed):
        rows = len(resampled)
        for j, (codes, m) in coded.items():
            width = 3 * m + 1
            flat = (codes[resampled] + (width * np.arange(rows))[:, None]).ravel()
            counts = np.bincount(flat, minlength=rows * width).reshape(rows, width)
            aucs[start : start + rows, j] = _auc_from_counts(counts, m)
        start += rows
    return aucs


def resample_indices(n_images: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples of `bootstrap_auc`: (chunk, n_images) arrays of image indices drawn with replacement.

    Row ``b`` of the concatenated chunks is resample ``b``; any statistic computed on these rows is paired with
    the AUCs of `bootstrap_auc` for the same ``seed``.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        yield rng.integers(0, n_images, size=(min(_BOOTSTRAP_CHUNK, n_resamples - start), n_images))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the finite ``samples`` (NaN = dropped resample); None if none is left."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def macro_mean(samples: np.ndarray) -> np.ndarray:
    """Per row (resample), the mean over the columns (findings) that are defined there; NaN if none is.

    Used for the interval of the macro mean AUC: a resample in which a rare finding happens to have no positive
    image still counts, with the mean of the other findings, rather than being dropped.
    """
    samples = np.asarray(samples, dtype=np.float64)
    finite = np.isfinite(samples)
    count = finite.sum(axis=1)
    total = np.where(finite, samples, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class DeLong(NamedTuple):
    """DeLong's test of two correlated AUCs: ``difference = auc_a - auc_b``, ``z = difference / sqrt(variance)``."""

    auc_a: float
    auc_b: float
    difference: float
    variance: float | None
    z: float | None
    p_value: float | None  # two-sided


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLong | None:
    """DeLong's test for two AUCs measured on the same images (DeLong et al. 1988; fast form of Sun & Xu 2014).

    Parameters
    ----------
    y_true
        0/1 labels of one finding.
    score_a, score_b
        The two models' scores on the same images, in the same order.

    Returns
    -------
    DeLong or None
        None when ``y_true`` lacks a class. ``variance``, ``z`` and ``p_value`` are None with fewer than two
        positives or negatives (no variance estimate); identical AUCs with zero variance give z 0 and p 1.

    Notes
    -----
    The AUC is the mean over positives of V10 (the share of negatives it beats, ties half) and over negatives
    of V01 (the share of positives beating it). Their covariances across the two models give the covariance
    of the AUCs, ``S10 / n_pos + S01 / n_neg``. Midranks give V10 and V01 in O(n log n) rather than the
    O(n_pos * n_neg) of the definition.
    """
    y, a = _binary(y_true, score_a)
    _, b = _binary(y_true, score_b)
    if a.shape != b.shape:
        raise ValueError("score_a and score_b must have the same length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    v10, v01, aucs = [], [], []
    for score in (a, b):
        pos, neg = score[y], score[~y]
        ranks = _midranks(np.r_[pos, neg])
        v10.append((ranks[:n_pos] - _midranks(pos)) / n_neg)
        v01.append(1.0 - (ranks[n_pos:] - _midranks(neg)) / n_pos)
        aucs.append(float(v10[-1].mean()))
    difference = aucs[0] - aucs[1]
    if n_pos < 2 or n_neg < 2:
        return DeLong(aucs[0], aucs[1], difference, None, None, None)
    covariance = np.cov(v10) / n_pos + np.cov(v01) / n_neg
    variance = max(0.0, float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]))
    if variance == 0.0:
        return DeLong(aucs[0], aucs[1], difference, 0.0, *((0.0, 1.0) if difference == 0 else (None, None)))
    z = difference / math.sqrt(variance)
    return DeLong(aucs[0], aucs[1], difference, variance, z, math.erfc(abs(z) / math.sqrt(2)))


def bootstrap_auc_difference(
    y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """Paired bootstrap of ``AUC(a) - AUC(b)``: both models scored on the very same resamples of images.

    Parameters
    ----------
    y_true, score_a, score_b
        (n_images, n_findings) arrays, or 1-D for one finding.

    Returns
    -------
    numpy.ndarray
        (n_resamples, n_findings) differences, or (n_resamples,) for 1-D input; NaN where a resample lacks a
        class. Feed a column to `percentile_interval` for its confidence interval.
    """
    y, a, b = (np.asarray(x) for x in (y_true, score_a, score_b))
    one_finding = y.ndim == 1
    if one_finding:
        y, a, b = y[:, None], a[:, None], b[:, None]
    k = y.shape[1]
    aucs = bootstrap_auc(np.hstack([y, y]), np.hstack([a, b]), n_resamples=n_resamples, seed=seed)
    difference = aucs[:, :k] - aucs[:, k:]
    return difference[:, 0] if one_finding else difference


def grouped_bootstrap_auc(
    y_true: np.ndarray, y_score: np.ndarray, group: np.ndarray, n_groups: int, resampled: np.ndarray
) -> np.ndarray:
    """AUC of one finding within each of several disjoint groups of images, on given bootstrap resamples.

    Parameters
    ----------
    y_true, y_score
        Labels (0/1) and scores of one finding, all images.
    group
        Each image's group, ``0 .. n_groups - 1``, or -1 for an image in none.
    resampled
        (rows, n_images) image indices, a chunk of `resample_indices`: the groups' AUCs are paired with any
        other statistic of the same resamples.

    Returns
    -------
    numpy.ndarray
        (rows, n_groups) AUCs; NaN where a group lacks a class in a resample (or altogether).

    Notes
    -----
    The codes of `bootstrap_auc`, one code space per group laid end to end, and a final bin for images in no
    group: one ``bincount`` per chunk counts every group at once.
    """
    y, s = _binary(y_true, y_score)
    group = np.asarray(group)
    rows = len(resampled)
    codes = np.full(y.size, -1, dtype=np.intp)
    spans: list[tuple[int, int, int] | None] = []
    offset = 0
    for g in range(n_groups):
        member = group == g
        if not has_both_classes(y[member]):
            spans.append(None)
            continue
        group_codes, m = _bootstrap_codes(y[member], s[member])
        codes[member] = group_codes + offset
        spans.append((offset, 3 * m + 1, m))
        offset += 3 * m + 1
    codes[codes < 0] = offset  # outside every group with a defined AUC: the last bin, not counted
    width = offset + 1
    flat = (codes[resampled] + (width * np.arange(rows))[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * width).reshape(rows, width)
    aucs = np.full((rows, n_groups), np.nan)
    for g, span in enumerate(spans):
        if span is not None:
            start, size, m = span
            aucs[:, g] = _auc_from_counts(counts[:, start : start + size], m)
    return aucs
