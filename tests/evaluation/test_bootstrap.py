"""`pipeline.evaluation.bootstrap`: the grouped bootstrap against a plain loop over the same resamples."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import InputError
from pipeline.evaluation import bootstrap, metrics


def test_grouped_mean_matches_a_loop_over_resampled_groups():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(7), [1, 3, 2, 1, 4, 2, 1])  # 7 images with 1 to 4 boxes each
    values = rng.random(groups.size)
    weights = bootstrap.group_weights(7, 200, seed=5)
    result = bootstrap.grouped_mean(values, groups, weights)
    # independent: draw the same group indices, take every item of each drawn group, average
    drawn = np.concatenate(list(metrics.resample_indices(7, 200, 5)))
    samples = [np.concatenate([values[groups == g] for g in rows]).mean() for rows in drawn]
    assert result["mean"] == pytest.approx(values.mean())
    assert result["ci"] == pytest.approx(list(np.percentile(samples, [2.5, 97.5])))


def test_one_group_or_no_resamples_give_no_interval_and_no_values_no_mean():
    assert bootstrap.grouped_mean(np.array([0.2, 0.4]), np.array([0, 0]), bootstrap.group_weights(1, 50, 0)) == {
        "mean": pytest.approx(0.3), "ci": None}
    no_resamples = bootstrap.group_weights(2, 0, 0)
    assert bootstrap.grouped_mean(np.array([0.2, 0.4]), np.array([0, 1]), no_resamples)["ci"] is None
    assert bootstrap.grouped_mean(np.array([]), np.array([], int), bootstrap.group_weights(2, 10, 0)) == {
        "mean": None, "ci": None}


def test_the_resample_count_rule():
    bootstrap.check_bootstrap(0)
    with pytest.raises(InputError, match=r"^`n_bootstrap` must be 0 \(no intervals\) or more, got -1$"):
        bootstrap.check_bootstrap(-1)
