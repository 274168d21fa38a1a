"""`pipeline.evaluation.conformal`: thresholds against the conformal p-value's definition, the promised rates on
many random calibration/test splits of exchangeable data, too-few messages, and the risk-coverage end points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.errors import InputError
from pipeline.evaluation import conformal, metrics, results
from pipeline.evaluation.conformal import Answer


def synthetic(n_images: int, n_findings: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable multi-label data: labels with prevalences 10-40%, scores higher for positives, some ties."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.1, 0.4, n_findings)
    y = (rng.random((n_images, n_findings)) < prevalence).astype(np.int8)
    p = np.where(y == 1, rng.beta(4, 2, y.shape), rng.beta(2, 4, y.shape))
    return y, np.round(p, 3)  # rounding makes ties, which the rules must survive


def ruled_out_by_p_value(score: float, positives: np.ndarray, alpha: float) -> bool:
    """The definition: rule out when the conformal p-value (1 + #{positives <= score}) / (n + 1) is <= alpha."""
    return (1 + int((positives <= score).sum())) / (positives.size + 1) <= alpha + 1e-12


@pytest.mark.parametrize(("n", "alpha"), [(4, 0.2), (9, 0.1), (19, 0.1), (30, 0.25), (99, 0.57), (7, 0.3)])
def test_miss_threshold_is_the_order_statistic_and_matches_the_p_value_definition(n, alpha):
    rng = np.random.default_rng(n)
    positives = rng.random(n)
    threshold, bound = conformal.miss_threshold(positives, alpha)
    k = int(np.floor(alpha * (n + 1) + 1e-9))
    assert threshold == np.sort(positives)[k - 1]
    assert bound == pytest.approx(k / (n + 1)) and bound <= alpha + 1e-12
    grid = np.r_[positives, np.linspace(0, 1, 301)]
    for score in grid:
        assert (score < threshold) == ruled_out_by_p_value(score, positives, alpha), score


def test_false_alarm_threshold_mirrors_the_miss_threshold():
    negatives = np.random.default_rng(1).random(40)
    threshold, bound = conformal.false_alarm_threshold(negatives, 0.1)
    assert threshold == np.sort(negatives)[::-1][3]  # k = floor(0.1 * 41) = 4: the 4th largest
    assert bound == pytest.approx(4 / 41)
    for score in np.r_[negatives, np.linspace(0, 1, 301)]:
        p_value = (1 + int((negatives >= score).sum())) / 41
        assert (score > threshold) == (p_value <= 0.1)


def test_too_few_positives_gives_the_message_not_a_threshold():
    y = np.r_[np.ones(3), np.zeros(30)]
    p = np.linspace(0, 1, 33)
    guarantee = conformal.calibrate_finding(y, p, miss_rate=0.2, false_alarm_rate=0.2)
    assert guarantee.miss_threshold is None and guarantee.miss_bound is None
    assert guarantee.notes == ["3 validation positives: too few for a miss rate of 0.2 (needs at least 4); "
                               "nothing is ruled out"]
    assert guarantee.false_alarm_threshold is not None
    four = conformal.calibrate_finding(np.r_[np.ones(4), np.zeros(30)], np.linspace(0, 1, 34), 0.2, 0.2)
    assert four.miss_threshold == 0.0 and four.notes == []  # exactly enough: the lowest positive score
    # With no threshold nothing is ruled out, whatever the score.
    assert conformal.answer(0.0, guarantee) is not Answer.RULED_OUT


def test_three_answers_and_crossed_thresholds():
    g = results.FindingGuarantee(10, 40, miss_threshold=0.3, miss_bound=0.09, false_alarm_threshold=0.7,
                                 false_alarm_bound=0.1, notes=[])
    assert [conformal.answer(s, g) for s in (0.1, 0.3, 0.5, 0.7, 0.9)] == [
        Answer.RULED_OUT, Answer.UNCERTAIN, Answer.UNCERTAIN, Answer.UNCERTAIN, Answer.FLAGGED]
    crossed = results.FindingGuarantee(10, 40, 0.6, 0.09, 0.4, 0.1, [])
    assert [conformal.answer(s, crossed) for s in (0.3, 0.5, 0.7)] == [
        Answer.RULED_OUT, Answer.UNCERTAIN, Answer.FLAGGED]


def test_average_realised_rates_keep_the_promise_over_random_splits():
    """Exchangeable data, 2,000 random calibration/test splits: mean realised rates <= alpha (Monte-Carlo error)."""
    y, p = synthetic(600, 3, seed=7)
    alpha, rng = 0.1, np.random.default_rng(0)
    misses, alarms, shares, bounds = [], [], [], []
    for _ in range(2000):
        order = rng.permutation(len(y))
        cal, test = order[:200], order[200:]
        for j in range(y.shape[1]):
            g = conformal.calibrate_finding(y[cal, j], p[cal, j], alpha, alpha)
            positives, negatives = p[test, j][y[test, j] == 1], p[test, j][y[test, j] == 0]
            # A finding with too few calibration positives rules nothing out, so it misses nothing.
            misses.append((positives < (g.miss_threshold if g.miss_threshold is not None else -1)).mean())
            alarms.append((negatives > g.false_alarm_threshold).mean())
            bounds.append(g.miss_bound or 0.0)
        t = conformal.risk_control_threshold(y[cal], p[cal], alpha)
        shares.append(conformal.missed_shares(y[test], p[test], t).mean())
    for rates in (misses, alarms, shares):
        mean, error = np.mean(rates), np.std(rates) / np.sqrt(len(rates))
        assert mean <= alpha + 3 * error, (mean, error)
    # Not vacuous: the per-finding miss rate sits near the finite-sample bound k / (n + 1), not far below alpha.
    assert np.mean(misses) > np.mean(bounds) - 0.02


def test_realised_rates_show_a_broken_promise_under_shift():
    """Test scores shifted down (dataset shift): the realised miss rate exceeds alpha and its interval says so."""
    y, p = synthetic(2000, 1, seed=3)
    g = conformal.calibrate_finding(y[:1000, 0], p[:1000, 0], 0.1, 0.1)
    conformal.check_finding(g, y[1000:, 0], np.clip(p[1000:, 0] - 0.2, 0, 1))
    assert g.test_misses.rate > 0.1 and g.test_misses.ci[0] > 0.1


def test_risk_control_threshold_is_the_brute_force_one():
    for seed, alpha in [(0, 0.1), (1, 0.2), (2, 0.05), (3, 0.3)]:
        y, p = synthetic(60, 5, seed)
        t = conformal.risk_control_threshold(y, p, alpha)
        has = y.any(axis=1)
        n = int(has.sum())

        def admissible(c, y=y, p=p, has=has, n=n, alpha=alpha):
            losses = [sum(y[i, k] and p[i, k] < c for k in range(5)) / y[i].sum() for i in np.flatnonzero(has)]
            return (sum(losses) + 1) / (n + 1) <= alpha + 1e-12

        candidates = np.r_[np.unique(p), np.linspace(0, 1, 201)]
        best = max(c for c in candidates if admissible(c))
        assert t == pytest.approx(best) and admissible(t)
        assert not any(admissible(c) for c in candidates if c > t + 1e-12)


def test_risk_control_needs_enough_images():
    y, p = synthetic(40, 5, seed=4)
    few = conformal.calibrate_image(y[:3], p[:3], 0.2)  # at most 3 images with a finding; 0.2 needs 4
    assert few.threshold is None and "too few for a miss rate of 0.2 (needs at least 4)" in few.note


def test_clopper_pearson_interval():
    none = conformal.realised(0, 10)
    assert none.rate == 0 and none.ci[0] == 0 and none.ci[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    all_ = conformal.realised(10, 10)
    assert all_.ci == [pytest.approx(0.025 ** (1 / 10)), 1.0]
    assert conformal.realised(0, 0).rate is None


def test_risk_coverage_end_points():
    y, p = synthetic(300, 4, seed=5)
    guarantees = conformal.calibrate(y[:150], p[:150], 0.1, findings=["a", "b", "c", "d"])
    curve = conformal.risk_coverage(y[150:], p[150:], guarantees)
    full, empty = curve.iloc[0], curve.iloc[-1]
    yt, pt = y[150:].astype(bool), p[150:]
    thresholds = np.array([g.miss_threshold for g in guarantees.findings.values()])
    assert full.coverage == 1 and full.n_kept == 150
    assert full.miss_rate == pytest.approx((yt & (pt < thresholds)).sum() / yt.sum())
    assert full.set_miss == pytest.approx(conformal.missed_shares(yt, pt, guarantees.image.threshold).mean())
    assert full.mean_auc == pytest.approx(np.mean([metrics.roc_auc(yt[:, j], pt[:, j]) for j in range(4)]))
    assert empty.coverage == 0 and empty.n_kept == 0
    assert np.isnan(empty.miss_rate) and np.isnan(empty.set_miss) and np.isnan(empty.mean_auc)
    assert len(curve) == 101 and curve.n_kept.is_monotonic_decreasing
    # Abstaining on the least certain images first: at half coverage AUC rises on this data.
    half = curve.iloc[(curve.coverage - 0.5).abs().argmin()]
    assert half.mean_auc > full.mean_auc


def test_risk_coverage_counts_and_exact_interval_of_the_miss_rate():
    """One finding with a threshold (0.2: the 2nd of 9 validation positives at a miss rate of 0.2), one without."""
    from scipy import stats

    y_valid = np.array([[1, 1]] + [[1, 0]] * 8 + [[0, 0]] * 3)
    p_valid = np.c_[np.r_[np.arange(1, 10) / 10, 0.3, 0.3, 0.3], np.full(12, 0.5)]
    guarantees = conformal.calibrate(y_valid, p_valid, 0.2, findings=["a", "b"])
    assert guarantees.findings["a"].miss_threshold == 0.2 and guarantees.findings["b"].miss_threshold is None
    y = np.c_[np.ones(6), [1, 0, 1, 0, 1, 0]]  # b's positives have no threshold: never counted
    p = np.c_[[0.05, 0.15, 0.5, 0.6, 0.7, 0.8], np.zeros(6)]
    curve = conformal.risk_coverage(y, p, guarantees, uncertainty=np.arange(6, 0, -1)).set_index("n_kept")
    assert curve["positives"].tolist() == [6, 5, 4, 3, 2, 1, 0]
    assert curve["missed"].tolist() == [2, 1, 0, 0, 0, 0, 0]
    for n, k in ((6, 2), (5, 1)):
        row = curve.loc[n]
        assert row.miss_rate == k / n
        assert row.miss_low == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1), abs=1e-12)
        assert row.miss_high == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k), abs=1e-12)
    assert curve.loc[4, "miss_low"] == 0 and curve.loc[4, "miss_high"] == pytest.approx(1 - 0.025 ** (1 / 4))
    assert np.isnan(curve.loc[0, ["miss_rate", "miss_low", "miss_high"]].astype(float)).all()


def test_out_of_distribution_images_are_abstained_on_first():
    y, p = synthetic(80, 4, seed=9)
    guarantees = conformal.calibrate(y[:40], p[:40], 0.2, findings=["a", "b", "c", "d"])
    yt, pt = y[40:], p[40:]
    flagged = np.zeros(40, bool)
    flagged[[3, 17]] = True
    order = conformal.abstention_order(pt, flagged)
    assert set(np.argsort(-order)[:2]) == {3, 17}  # above every in-distribution image, however certain
    curve = conformal.risk_coverage(yt, pt, guarantees, order).set_index("n_kept")
    kept = ~flagged
    alone = conformal.risk_coverage(yt[kept], pt[kept], guarantees)
    assert curve.loc[38, "mean_auc"] == pytest.approx(alone.iloc[0].mean_auc)
    assert curve.loc[38, "set_miss"] == pytest.approx(alone.iloc[0].set_miss)


def test_rates_are_checked_once():
    y, p = synthetic(50, 2, seed=6)
    for rate in (0, 1, 1.5, -0.1, True):
        with pytest.raises(InputError, match="`miss_rate` must be a share between 0 and 1"):
            conformal.calibrate(y, p, rate, findings=["a", "b"])
    with pytest.raises(InputError, match="`false_alarm_rate`"):
        conformal.calibrate(y, p, 0.1, 1.0, findings=["a", "b"])


def test_conformal_json_round_trips(tmp_path):
    from pipeline.core.findings import FINDINGS

    y, p = synthetic(120, 14, seed=8)
    guarantees = conformal.calibrate(y[:60], p[:60], 0.2, 0.1, calibration="valid.csv")
    conformal.check(guarantees, y[60:], p[60:], test="test.csv", n_bootstrap=50)
    curve = conformal.risk_coverage(y[60:], p[60:], guarantees)
    results.write_conformal(guarantees, curve, tmp_path)
    assert results.read_conformal(tmp_path) == guarantees
    assert results.read_risk_coverage(tmp_path).shape == curve.shape
    # A risk_coverage.csv written before the counts and interval still reads, those columns NaN.
    curve.drop(columns=results.RISK_COVERAGE_INTERVAL).to_csv(tmp_path / results.RISK_COVERAGE_CSV, index=False)
    older = results.read_risk_coverage(tmp_path)
    assert list(older.columns) == results.RISK_COVERAGE_COLUMNS and older["miss_low"].isna().all()
    np.testing.assert_allclose(older["miss_rate"], curve["miss_rate"])
    assert list(guarantees.findings) == list(FINDINGS)
    content = json.loads((tmp_path / results.CONFORMAL_JSON).read_text())
    del content["findings"]["Mass"]
    (tmp_path / results.CONFORMAL_JSON).write_text(json.dumps(content))
    with pytest.raises(InputError, match="no entry for Mass"):
        results.read_conformal(tmp_path)
    assert results.read_conformal(tmp_path / "elsewhere") is None


def test_a_checkpoint_finds_only_the_guarantees_of_its_own_model(tmp_path):
    """predict with another checkpoint of the run must not borrow thresholds calibrated on best.keras's scores; a
    moved run keeps them, and so does the export of the same weights (matched by the SHA-256 in its .onnx.json)."""
    import shutil

    from conftest import REPO

    demo = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
    run = tmp_path / "moved-run"
    (run / "eval-test").mkdir(parents=True)
    for name in (results.METRICS_JSON, results.CONFORMAL_JSON):
        shutil.copy(demo / "eval-test" / name, run / "eval-test" / name)
    for name in ("best.keras", "best.onnx.json"):  # copies: a link would lead back to the demo run's folder
        shutil.copy(demo / name, run / name)
    (run / "last.keras").write_bytes(b"other weights")
    found = conformal.find_for_checkpoint(run / "best.keras")
    assert found is not None and found.folder == run / "eval-test" and found.guarantees.miss_rate == 0.2
    assert found.note is None  # matched by the weights' hash, not by name
    assert conformal.find_for_checkpoint(run / "best.onnx") is not None  # the export of the same weights
    assert conformal.find_for_checkpoint(run / "last.keras") is None
    assert conformal.find_for_checkpoint(run / "checkpoints" / "epoch-003.keras") is None


def test_promised_rates_in_words_are_never_rounded_below_the_bound():
    assert [conformal.percent(b) for b in (1 / 8, 0.2, 2 / 11, 0.025, 1 / 3)] == ["12.5%", "20%", "18.2%", "2.5%",
                                                                                  "33.4%"]
    g = conformal.calibrate_finding(np.r_[np.ones(7), np.zeros(30)], np.r_[np.linspace(0.3, 0.9, 7), np.full(30, 0.1)],
                                    0.125, 0.2)
    assert g.miss_bound == 1 / 8
    found = conformal.calibrate(np.ones((3, 14)), np.full((3, 14), 0.5), 0.5, calibration="valid.csv")
    found.findings["Atelectasis"] = g
    assert conformal.guarantee_text(found, "Atelectasis", Answer.RULED_OUT) == (
        "score below 0.300: a positive image is ruled out with probability at most 12.5% (calibrated on 7 positives "
        "of valid.csv)")


def test_the_shipped_guarantees_name_the_validation_labels_they_were_calibrated_on():
    from conftest import REPO

    run = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
    found = results.read_conformal(run / "eval-test")
    assert found.calibration_sha256 == results.read_metrics(run / "eval-valid").labels_sha256 is not None
