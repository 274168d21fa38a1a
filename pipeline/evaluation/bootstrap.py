"""Bootstrap intervals over groups, and the one rule for a resample count: plain NumPy, no TensorFlow.

`pipeline.evaluation.metrics` holds the bootstraps of AUCs (vectorised per finding); here is the generic
one for a mean over items that come in groups (the boxes of an image, the images of a patient): a resample
draws groups with replacement and takes every item of a drawn group, so items of one group never count as
independent. The resamples are those of `metrics.resample_indices`, drawn over the groups.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import InputError
from pipeline.evaluation import metrics


def check_bootstrap(n_bootstrap: int) -> None:
    """The one rule for a resample count, for every command that takes one: 0 (no intervals) or more."""
    if n_bootstrap < 0:
        raise InputError(f"`n_bootstrap` must be 0 (no intervals) or more, got {n_bootstrap}")


def group_weights(n_groups: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n_groups)``: how many times each group is drawn in each resample (none when 0)."""
    check_bootstrap(n_bootstrap)
    if n_bootstrap == 0 or n_groups == 0:
        return np.zeros((0, n_groups))
    chunks = [np.apply_along_axis(np.bincount, 1, rows, minlength=n_groups)
              for rows in metrics.resample_indices(n_groups, n_bootstrap, seed)]
    return np.concatenate(chunks).astype(np.float64)


def grouped_mean(values: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> dict[str, float | list | None]:
    """``{"mean", "ci"}``: the mean of ``values`` and its percentile 95% interval over resamples of the groups.

    ``groups`` gives each value's group as an index into the columns of ``weights`` (`group_weights`). The
    interval is None with fewer than two groups (a bootstrap of one group says nothing) or no resamples; the
    mean is None without values.
    """
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    if values.size == 0:
        return {"mean": None, "ci": None}
    mean = float(values.mean())
    if np.unique(groups).size < 2 or len(weights) == 0:
        return {"mean": mean, "ci": None}
    n_groups = weights.shape[1]
    sums = np.bincount(groups, weights=values, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (weights @ sums) / (weights @ counts)
    interval = metrics.percentile_interval(samples)
    return {"mean": mean, "ci": list(interval) if interval else None}
