"""Split conformal guarantees: per-finding thresholds with a bounded miss (and false-alarm) rate, three answers,
image-level conformal risk control, and the risk-coverage curve of abstention.

Per finding (class-conditional split conformal): with ``n`` validation positives and a miss rate ``alpha``, let
``k = floor(alpha (n + 1))``; the threshold is the k-th smallest positive score, and a new image scoring *below*
it is *ruled out*. If the new positive and the ``n`` validation positives are exchangeable, its rank among the
``n + 1`` scores is uniform, so P(miss) <= k / (n + 1) <= alpha. With ``k = 0`` (fewer than about
``1 / alpha - 1`` positives) no threshold can keep the promise, and the finding says so instead of giving one.
The false-alarm threshold is the mirror image on the validation negatives: a score *above* the k-th largest
negative score is *flagged*, with P(false alarm) <= k / (m + 1).

Image level (conformal risk control, Angelopoulos et al., ICLR 2024): the set of findings that cannot be ruled
out is {findings scoring >= t}; over the ``n`` validation images with at least one finding, t is the largest
value with (sum of losses + 1) / (n + 1) <= alpha, where an image's loss is the share of its true findings
scoring below t. Then the expected share of a new image's true findings left out of its set is at most alpha.

The guarantees are marginal (on average over calibration sets and new images), hold only for images
exchangeable with the calibration images, and say nothing about one image. NumPy and SciPy only.

About 500 lines, kept whole on purpose: the per-finding thresholds, the answers built on them, the image-level
threshold, the realised rates and the abstention curve are one method sharing one rank rule and one stored type
(`pipeline.evaluation.results.Conformal`); `evaluate` and `predict` call only its public functions.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import metrics, provenance
from pipeline.evaluation.results import (
    CONFORMAL_JSON,
    RISK_COVERAGE_COLUMNS,
    Conformal,
    FindingGuarantee,
    ImageGuarantee,
    Realised,
    align,
    read_conformal,
    read_metrics,
    read_scored,
    write_conformal,
)

ENTROPY_ORDER = "least certain first: highest mean binary entropy of the 14 probabilities"
OOD_FIRST = "out-of-distribution images first (the run's guard), then the highest mean binary entropy"
CURVE_POINTS = 101  # coverage levels of the risk-coverage curve for large sets (small sets get every image)


class Answer(enum.Enum):
    """One finding's answer for one image."""

    RULED_OUT = "ruled out"
    UNCERTAIN = "uncertain"
    FLAGGED = "flagged"


# --- per finding -------------------------------------------------------------------------------------------------


def check_rate(rate: float, parameter: str) -> None:
    """The one rule for a promised rate: a share strictly between 0 and 1."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1:
        raise InputError(f"`{parameter}` must be a share between 0 and 1 (e.g. 0.1), got {rate!r}")


def rank(n: int, rate: float) -> int:
    """``k = floor(rate (n + 1))``: the order statistic of ``n`` calibration scores that keeps ``rate``."""
    return math.floor(round(rate * (n + 1), 9))  # rounded so that 0.57 * 100 counts as 57, not 56.99999...


def fewest(rate: float) -> int:
    """The fewest calibration images of a class for which `rank` is at least 1."""
    return max(0, math.ceil(round(1 / rate, 9)) - 1)


def miss_threshold(positive_scores: np.ndarray, miss_rate: float) -> tuple[float | None, float | None]:
    """The threshold below which a score is ruled out, and the miss rate it guarantees (None, None: too few)."""
    scores = np.sort(np.asarray(positive_scores, dtype=np.float64))
    k = rank(scores.size, miss_rate)
    if k == 0:
        return None, None
    return float(scores[k - 1]), k / (scores.size + 1)


def false_alarm_threshold(negative_scores: np.ndarray, false_alarm_rate: float) -> tuple[float | None, float | None]:
    """The threshold above which a score is flagged, and the false-alarm rate it guarantees (None, None: too few)."""
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    k = rank(scores.size, false_alarm_rate)
    if k == 0:
        return None, None
    return float(scores[k - 1]), k / (scores.size + 1)


def calibrate_finding(y: np.ndarray, p: np.ndarray, miss_rate: float, false_alarm_rate: float) -> FindingGuarantee:
    """One finding's thresholds from its validation labels ``y`` and scores ``p``, with notes where there are none."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    miss, miss_bound = miss_threshold(p[y], miss_rate)
    alarm, alarm_bound = false_alarm_threshold(p[~y], false_alarm_rate)
    notes = []
    if miss is None:
        notes.append(
            f"{int(y.sum())} validation positives: too few for a miss rate of {miss_rate:g} (needs at least "
            f"{fewest(miss_rate)}); nothing is ruled out"
        )
    if alarm is None:
        notes.append(
            f"{int((~y).sum())} validation negatives: too few for a false-alarm rate of {false_alarm_rate:g} "
            f"(needs at least {fewest(false_alarm_rate)}); nothing is flagged"
        )
    return FindingGuarantee(
        n_positive=int(y.sum()),
        n_negative=int((~y).sum()),
        miss_threshold=miss,
        miss_bound=miss_bound,
        false_alarm_threshold=alarm,
        false_alarm_bound=alarm_bound,
        notes=notes,
    )


def answer(score: float, guarantee: FindingGuarantee) -> Answer:
    """Ruled out below the miss threshold, flagged above the false-alarm threshold, else uncertain.

    Where the two thresholds cross (a weak model), a score that is both below one and above the other is
    uncertain: answering less often keeps both promises.
    """
    low = guarantee.miss_threshold is not None and score < guarantee.miss_threshold
    high = guarantee.false_alarm_threshold is not None and score > guarantee.false_alarm_threshold
    if low and not high:
        return Answer.RULED_OUT
    if high and not low:
        return Answer.FLAGGED
    return Answer.UNCERTAIN


def realised(count: int, n: int) -> Realised:
    """``count`` of ``n`` as a rate with its Clopper-Pearson (exact binomial) 95% interval."""
    if n == 0:
        return Realised(n=0, count=0, rate=None, ci=None)
    low = 0.0 if count == 0 else float(stats.beta.ppf(0.025, count, n - count + 1))
    high = 1.0 if count == n else float(stats.beta.ppf(0.975, count + 1, n - count))
    return Realised(n=n, count=count, rate=count / n, ci=[low, high])


def check_finding(guarantee: FindingGuarantee, y: np.ndarray, p: np.ndarray) -> None:
    """Fill in the rates a finding's thresholds realise on held-out labels ``y`` and scores ``p``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    if guarantee.miss_threshold is not None:
        guarantee.test_misses = realised(int((p[y] < guarantee.miss_threshold).sum()), int(y.sum()))
    if guarantee.false_alarm_threshold is not None:
        guarantee.test_false_alarms = realised(int((p[~y] > guarantee.false_alarm_threshold).sum()), int((~y).sum()))


# --- image level -------------------------------------------------------------------------------------------------


def missed_shares(y: np.ndarray, p: np.ndarray, threshold: float | None) -> np.ndarray:
    """Per image with at least one finding: the share of its true findings scoring below ``threshold``."""
    y = np.asarray(y).astype(bool)
    keep = y.any(axis=1)
    if threshold is None:
        return np.zeros(int(keep.sum()))
    y, p = y[keep], np.asarray(p, dtype=np.float64)[keep]
    return (y & (p < threshold)).sum(axis=1) / y.sum(axis=1)


def risk_control_threshold(y: np.ndarray, p: np.ndarray, miss_rate: float) -> float | None:
    """The largest t with (sum of validation losses at t + 1) / (n + 1) <= ``miss_rate`` (None: too few images).

    ``y`` and ``p`` are (images, findings); images without a finding are left out (their loss is always 0). The
    loss only changes just above a positive's score, so the largest admissible t is one of those scores.
    """
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    y, p = y[y.any(axis=1)], p[y.any(axis=1)]
    n = len(y)
    budget = miss_rate * (n + 1) - 1
    if budget < -1e-12 or n == 0:
        return None
    weights = np.repeat(1.0 / y.sum(axis=1), y.sum(axis=1))  # each positive's share of its image's findings
    scores = p[y]  # row-major, matching the weights
    order = np.argsort(scores, kind="stable")
    scores, weights = scores[order], weights[order]
    candidates = np.unique(scores)
    # Loss at candidate c: the weights of the positives scoring strictly below c.
    below = np.r_[0.0, np.cumsum(weights)][np.searchsorted(scores, candidates, side="left")]
    admissible = candidates[below <= budget + 1e-12]
    return float(admissible.max())


def calibrate_image(y: np.ndarray, p: np.ndarray, miss_rate: float) -> ImageGuarantee:
    """The image-level guarantee from validation labels and scores (images x findings)."""
    n = int(np.asarray(y).astype(bool).any(axis=1).sum())
    threshold = risk_control_threshold(y, p, miss_rate)
    note = None
    if threshold is None:
        note = (f"{n} validation images with a finding: too few for a miss rate of {miss_rate:g} (needs at least "
                f"{fewest(miss_rate)}); no finding is ruled out")
    return ImageGuarantee(n_images=n, threshold=threshold, note=note)


def check_image(guarantee: ImageGuarantee, y: np.ndarray, p: np.ndarray, n_bootstrap: int = 1000,
                seed: int = 0) -> None:
    """Fill in the share of true findings the image-level sets miss on held-out images, with a bootstrap interval."""
    shares = missed_shares(y, p, guarantee.threshold)
    threshold = -np.inf if guarantee.threshold is None else guarantee.threshold
    guarantee.test_n_images = int(shares.size)
    guarantee.test_mean_set_size = float((np.asarray(p) >= threshold).sum(axis=1).mean()) if len(p) else None
    if shares.size == 0:
        return
    guarantee.test_missed_share = float(shares.mean())
    if n_bootstrap:
        means = np.concatenate([shares[idx].mean(axis=1)
                                for idx in metrics.resample_indices(shares.size, n_bootstrap, seed)])
        bounds = metrics.percentile_interval(means)
        guarantee.test_missed_share_ci = None if bounds is None else list(bounds)


# --- everything at once ------------------------------------------------------------------------------------------


def calibrate(
    y: np.ndarray,
    p: np.ndarray,
    miss_rate: float,
    false_alarm_rate: float | None = None,
    *,
    calibration: str = "validation set",
    findings: Sequence[str] = FINDINGS,
) -> Conformal:
    """Every finding's thresholds and the image-level threshold from validation labels and scores (images x findings).

    ``false_alarm_rate`` defaults to ``miss_rate``; ``calibration`` names the data, for every page and report.
    """
    check_rate(miss_rate, "miss_rate")
    false_alarm_rate = miss_rate if false_alarm_rate is None else false_alarm_rate
    check_rate(false_alarm_rate, "false_alarm_rate")
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    return Conformal(
        miss_rate=float(miss_rate),
        false_alarm_rate=float(false_alarm_rate),
        calibration=calibration,
        calibration_images=len(y),
        findings={f: calibrate_finding(y[:, j], p[:, j], miss_rate, false_alarm_rate) for j, f in enumerate(findings)},
        image=calibrate_image(y, p, miss_rate),
        abstention=ENTROPY_ORDER,
    )


def check(conformal: Conformal, y: np.ndarray, p: np.ndarray, *, test: str = "test set", n_bootstrap: int = 1000,
          seed: int = 0) -> None:
    """Fill in the rates the guarantees realise on held-out labels and scores (images x findings, same order)."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    for j, guarantee in enumerate(conformal.findings.values()):
        check_finding(guarantee, y[:, j], p[:, j])
    check_image(conformal.image, y, p, n_bootstrap, seed)
    conformal.test = test


def answers(conformal: Conformal, probabilities: Mapping[str, float]) -> dict[str, Answer]:
    """Each finding's answer for one image's probabilities."""
    return {f: answer(float(probabilities[f]), g) for f, g in conformal.findings.items() if f in probabilities}


def image_set(conformal: Conformal, probabilities: Mapping[str, float]) -> list[str] | None:
    """The image-level set: the findings scoring at least the risk-control threshold (None without a threshold)."""
    t = conformal.image.threshold
    return None if t is None else [f for f in conformal.findings if f in probabilities and probabilities[f] >= t]


def percent(bound: float) -> str:
    """A promised rate in percent, rounded *up* to 0.1: a bound of 1/8 reads 12.5%, never the broken promise 12%."""
    return f"{math.ceil(round(bound * 1000, 6)) / 10:g}%"


def image_set_text(conformal: Conformal) -> str:
    """What the image-level set promises, in words."""
    image = conformal.image
    if image.threshold is None:
        return image.note or "no image-level threshold"
    return (f"findings scoring at least {image.threshold:.3f}: on average over images with a finding, at most "
            f"{percent(conformal.miss_rate)} of an image's true findings fall outside this set (calibrated on "
            f"{image.n_images} images with a finding of {conformal.calibration})")


def guarantee_text(conformal: Conformal, finding: str, given: Answer) -> str:
    """What an answer promises, in words, with the data it was calibrated on."""
    g = conformal.findings[finding]
    if given is Answer.RULED_OUT:
        return (f"score below {g.miss_threshold:.3f}: a positive image is ruled out with probability at most "
                f"{percent(g.miss_bound)} (calibrated on {g.n_positive} positives of {conformal.calibration})")
    if given is Answer.FLAGGED:
        return (f"score above {g.false_alarm_threshold:.3f}: a negative image is flagged with probability at most "
                f"{percent(g.false_alarm_bound)} (calibrated on {g.n_negative} negatives of {conformal.calibration})")
    if g.notes:
        return "; ".join(g.notes)
    return "between the thresholds: neither ruled out nor flagged"


# --- abstention ----------------------------------------------------------------------------------------------------


def entropy_uncertainty(p: np.ndarray) -> np.ndarray:
    """Per image, the mean binary entropy of its probabilities (bits): 1 at 0.5 everywhere, 0 when all are 0 or 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return (-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).mean(axis=1)


def abstention_order(p: np.ndarray, out_of_distribution: np.ndarray | None = None) -> np.ndarray:
    """The uncertainty `risk_coverage` abstains by: `entropy_uncertainty`, with flagged images above every other."""
    u = entropy_uncertainty(p)
    if out_of_distribution is not None:
        u = u + 2.0 * np.asarray(out_of_distribution, dtype=bool)  # entropy is at most 1 bit
    return u


def risk_coverage(
    y: np.ndarray,
    p: np.ndarray,
    conformal: Conformal,
    uncertainty: np.ndarray | None = None,
    points: int = CURVE_POINTS,
) -> pd.DataFrame:
    """Miss rates and mean AUC of the images kept as the model abstains on the least certain first.

    Columns: ``coverage`` (share kept), ``n_kept``, ``miss_rate`` = ``missed`` / ``positives`` (the kept
    positives of the findings that have a miss threshold, pooled, and those of them scoring below it) with its
    Clopper-Pearson 95% interval ``miss_low``-``miss_high`` (`realised`), ``set_miss`` (mean share of a kept
    image's true findings left out of its image-level set, over kept images with a finding), ``mean_auc`` (over
    findings with both classes among the kept images). ``set_miss`` and ``mean_auc`` stay points: neither has a
    closed-form interval, and a bootstrap at every coverage would cost more than the whole curve; read them with
    the rows' counts. Undefined values are NaN. ``uncertainty`` (higher: abstain earlier)
    defaults to `entropy_uncertainty`; an out-of-distribution flag can be added to it to abstain on those first.
    Sets of up to ``points`` images get a row per image; larger ones ``points`` evenly spaced coverages.
    """
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n = len(y)
    u = entropy_uncertainty(p) if uncertainty is None else np.asarray(uncertainty, dtype=np.float64)
    order = np.argsort(-u, kind="stable")  # most uncertain first: abstained on first
    thresholds = np.array([np.nan if g.miss_threshold is None else g.miss_threshold
                           for g in conformal.findings.values()])
    has = np.isfinite(thresholds)
    missed = y[:, has] & (p[:, has] < thresholds[has])
    image_t = conformal.image.threshold
    counts = np.arange(n, -1, -1) if n <= points else np.unique(np.round(np.linspace(n, 0, points)).astype(int))[::-1]
    rows = []
    for kept_n in counts:
        kept = np.sort(order[n - kept_n:])
        yk, pk = y[kept], p[kept]
        miss = realised(int(missed[kept].sum()), int(yk[:, has].sum()))
        low, high = miss.ci or (np.nan, np.nan)
        shares = missed_shares(yk, pk, image_t)
        aucs = [metrics.roc_auc(yk[:, j], pk[:, j]) for j in range(y.shape[1]) if metrics.has_both_classes(yk[:, j])]
        rows.append({
            "coverage": kept_n / n if n else 0.0,
            "n_kept": int(kept_n),
            "miss_rate": np.nan if miss.rate is None else miss.rate,
            "positives": miss.n,
            "missed": miss.count,
            "miss_low": low,
            "miss_high": high,
            "set_miss": shares.mean() if shares.size else np.nan,
            "mean_auc": float(np.mean(aucs)) if aucs else np.nan,
        })
    return pd.DataFrame(rows, columns=RISK_COVERAGE_COLUMNS)


# --- where predictions find their guarantees -----------------------------------------------------------------------

OOD_REASON = ("out of distribution ({}): conformal guarantees hold only for images like the calibration images, "
              "so this image gets none")


class Found(NamedTuple):
    """Guarantees found for a checkpoint: the evaluation folder, its conformal.json, and the one line to show when
    the evaluation matched the checkpoint by file name only (`pipeline.evaluation.provenance`); else None."""

    folder: Path
    guarantees: Conformal
    note: str | None


def find_for_checkpoint(checkpoint: str | Path) -> Found | None:
    """The conformal guarantees of a checkpoint's run: its ``eval-test`` folder's, else the first evaluation's
    that has a conformal.json, else None. A checkpoint under ``checkpoints/`` belongs to the run above it.

    Only an evaluation of the same weights counts (`provenance.match`: by SHA-256, an older one by file name with
    a note, preferring the former); one of other weights, or made from a predictions file, promises nothing here.
    """
    checkpoint = Path(checkpoint).resolve()
    folder = checkpoint.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    found = sorted(path.parent for path in folder.glob(f"*/{CONFORMAL_JSON}"))
    found.sort(key=lambda path: path.name != "eval-test")
    by_name = None
    for path in found:
        guarantees = read_conformal(path)
        if guarantees is None:
            continue
        matched = provenance.match(path, checkpoint, _name(path))
        if matched.binding is provenance.Binding.SAME_WEIGHTS:
            return Found(path, guarantees, None)
        if matched.ok and by_name is None:
            by_name = Found(path, guarantees, matched.note)
    return by_name


def load_for(eval_dir: str | Path, checkpoint: str | Path) -> Found:
    """An evaluation folder's guarantees for ``checkpoint``; `InputError` when it has none or scored other weights."""
    guarantees = load(eval_dir)
    matched = provenance.match(eval_dir, checkpoint)
    if not matched.ok:
        raise InputError(matched.note)
    return Found(Path(eval_dir), guarantees, matched.note)


def load(eval_dir: str | Path) -> Conformal:
    """An evaluation folder's guarantees; `InputError` when it has none."""
    guarantees = read_conformal(eval_dir)
    if guarantees is None:
        raise InputError(f"{eval_dir}: no {CONFORMAL_JSON}; evaluate with `miss_rate` and validation data first")
    return guarantees


def check_request(miss_rate: float | None, false_alarm_rate: float | None, has_validation: bool) -> None:
    """The rules of an evaluation's ``miss_rate`` and ``false_alarm_rate``, checked before anything is predicted."""
    if miss_rate is None:
        if false_alarm_rate is not None:
            raise InputError("`false_alarm_rate` needs `miss_rate`: the conformal thresholds are chosen together")
        return
    check_rate(miss_rate, "miss_rate")
    if false_alarm_rate is not None:
        check_rate(false_alarm_rate, "false_alarm_rate")
    if not has_validation:
        raise InputError(
            "`miss_rate` needs validation data to calibrate on: give `valid_predictions` or `valid_labels`"
        )


def from_tables(
    valid: tuple[pd.DataFrame, pd.DataFrame, str],
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    miss_rate: float,
    false_alarm_rate: float | None = None,
    *,
    test: str = "test set",
    n_bootstrap: int = 1000,
    seed: int = 0,
    out_of_distribution: Collection[str] = (),
) -> tuple[Conformal, pd.DataFrame]:
    """Guarantees calibrated on ``valid`` (labels, predictions, name) and checked on ``labels`` and ``predictions``.

    Tables as `pipeline.evaluation.results.read_scored` gives them (any order; aligned here). The risk-coverage
    curve abstains first on the images named in ``out_of_distribution``, then on the least certain.
    """
    valid_labels, valid_predictions, valid_name = valid
    columns = list(FINDINGS)
    valid_predictions = align(valid_labels, valid_predictions, "validation labels", "validation predictions")
    guarantees = calibrate(valid_labels[columns].to_numpy(), valid_predictions[columns].to_numpy(), miss_rate,
                           false_alarm_rate, calibration=valid_name)
    predictions = align(labels, predictions, "labels", "predictions")
    y, p = labels[columns].to_numpy(), predictions[columns].to_numpy()
    check(guarantees, y, p, test=test, n_bootstrap=n_bootstrap, seed=seed)
    flagged = labels["Image"].isin(list(out_of_distribution)).to_numpy()
    if flagged.any():
        guarantees.abstention = OOD_FIRST
    return guarantees, risk_coverage(y, p, guarantees, abstention_order(p, flagged))


def add_to_evaluation(eval_dir: str | Path, valid_dir: str | Path, miss_rate: float,
                      false_alarm_rate: float | None = None, n_bootstrap: int = 1000, seed: int = 0) -> Conformal:
    """Calibrate on a validation evaluation folder's saved predictions, check on another's, and write the latter's
    conformal.json and risk_coverage.csv (nothing is predicted again; metrics.json is left as it is)."""
    guarantees, curve = from_tables((*read_scored(valid_dir), _name(valid_dir)), *read_scored(eval_dir), miss_rate,
                                    false_alarm_rate, test=_name(eval_dir), n_bootstrap=n_bootstrap, seed=seed)
    guarantees.calibration_sha256 = read_metrics(valid_dir).labels_sha256
    write_conformal(guarantees, curve, eval_dir)
    return guarantees


def _name(folder: str | Path) -> str:
    """An evaluation folder as users know it: relative to the checkout when inside it."""
    from pipeline.core import paths

    return paths.shorten(Path(folder).resolve())
