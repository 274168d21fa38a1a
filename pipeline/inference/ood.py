"""Is an image something the model can answer for? Cheap pixel checks, a polarity check, then typicality.

Cheap checks look at the decoded file (`pipeline.data.imaging.load_decoded`) before the model runs: colour
whose channels differ materially (a photograph, a coloured chart), near-constant images, pixel noise
(radiographs are smooth: little of their variance is in the finest detail), and aspect ratios no chest
film has. The polarity check catches inverted grey levels (bone dark, lungs bright: a common export
mistake that the model's features alone do not separate): a logistic regression on an 8 x 8 thumbnail
and the grey-level histogram of the image's central 60%, fitted on the training images against their
own inversions. The typicality score asks whether the model's own pooled features (the 1024
values its head reads) lie where the training images' features lie: a Mahalanobis distance under a
low-rank-plus-isotropic covariance (the top principal components of the training features, the rest
as one shrunk variance), which stays well-conditioned with fewer images than feature dimensions. The
threshold is the largest distance of any held-out image (training images out-of-fold, validation images),
so every image the run was made from passes and at least 99% of the validation images do.

``typicality`` is ``threshold / distance``: 1.0 is the threshold, larger is more typical, and an image
is in distribution when it is at least 1.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import InputError, reason
from pipeline.core.files import sha256_of, write_json_atomic

STATS_FILE = "typicality.npz"
INFO_FILE = "typicality.json"
PASS_RATE = 0.99  # share of validation images that must pass
COMPONENTS = 32  # principal components kept; the rest of the variance is one isotropic term

CHECK_SIDE = 256  # side of the copy the pixel checks look at
MAX_ASPECT = 2.0  # chest films are about 0.75-1.33 wide per tall
COLOUR_LEVELS = 24  # channel spread (max - min, 8-bit levels) that counts a pixel as coloured
COLOUR_SHARE = 0.05  # share of coloured pixels that makes an image a colour image (annotations stay below)
MIN_SPREAD = 16  # 1st to 99th percentile range in 8-bit levels; less is a near-constant image
MAX_FINE_DETAIL = 0.5  # share of the std in detail finer than a sigma-1.5 blur at 256 px (X-rays <= 0.2, noise ~0.9)
POLARITY_C = 1.0  # inverse regularisation of the polarity regression
THUMB = 64  # the 8 x 8 thumbnail's share of `polarity_features`
# A polarity alarm is called an inverted X-ray only when the image is also laid out like a chest film: its
# thumbnail correlates with the polarity check's thumbnail weights (an inverted film's layout) and with its own
# mirror image (chests are roughly left-right symmetric). On the demo run, of the alarms on the 549 inverted
# embedded X-rays 502 of 547 pass both; of those on 400 pictures of random grey shapes, 2 of 199.
INVERTED_LAYOUT = 0.6
MIRROR_SYMMETRY = 0.4
# Largest plausible threshold: real runs have 124 (the demo run) to about 70,000 (a 40-image run); a distance of
# 1e8 would pass features a hundred million spreads away, i.e. the guard would check nothing.
MAX_THRESHOLD = 1e8


@dataclass(frozen=True)
class Verdict:
    """Whether an image is in distribution, its typicality (None when no statistics exist) and why not."""

    in_distribution: bool
    typicality: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Typicality:
    """Statistics of the training features and the validation-set threshold (see the module docstring)."""

    mean: np.ndarray  # channels
    components: np.ndarray  # k x channels, orthonormal rows
    variances: np.ndarray  # k: variance along each component
    residual_variance: float  # variance per dimension of what the components leave
    threshold: float  # distance that no held-out training or validation image exceeds
    polarity_weights: np.ndarray  # logistic regression on `polarity_features`: > 0 means inverted
    polarity_bias: float

    def distance(self, pooled: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``pooled`` (n x channels) from the training features."""
        centred = np.atleast_2d(np.asarray(pooled, np.float64)) - self.mean
        projected = centred @ self.components.T
        residual = np.sum(centred**2, axis=1) - np.sum(projected**2, axis=1)
        squared = np.sum(projected**2 / self.variances, axis=1) + np.maximum(residual, 0.0) / self.residual_variance
        return np.sqrt(squared)

    def score(self, pooled: np.ndarray) -> np.ndarray:
        """Typicality of each row: ``threshold / distance`` (at least 1 passes)."""
        return self.threshold / np.maximum(self.distance(pooled), 1e-12)

    def inverted(self, gray: np.ndarray) -> float:
        """Polarity score of an H x W uint8 gray image: above 0 it looks like an X-ray with inverted grey levels."""
        return float(polarity_features(gray) @ self.polarity_weights + self.polarity_bias)

    def inverted_layout(self, gray: np.ndarray) -> float:
        """Correlation (-1 to 1) of the image's 8 x 8 thumbnail with the layout of an inverted chest film.

        The polarity score alone also fires on pictures that are no X-ray at all (grey shapes); only an image
        laid out like a film whose grey levels are inverted deserves the advice to fix its export.
        """
        thumb = polarity_features(gray)[:THUMB]
        weights = self.polarity_weights[:THUMB]
        thumb, weights = thumb - thumb.mean(), weights - weights.mean()
        norm = math.sqrt(float(thumb @ thumb) * float(weights @ weights))
        return float(thumb @ weights / norm) if norm > 0 else 0.0


def polarity_features(gray: np.ndarray) -> np.ndarray:
    """8 x 8 thumbnail and 16-bin histogram (and its square root) of the central 60% of a gray image."""
    height, width = gray.shape
    centre = np.ascontiguousarray(gray[height // 5 : height - height // 5, width // 5 : width - width // 5])
    thumb = cv2.resize(centre, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float64).ravel() / 255
    hist = cv2.calcHist([centre], [0], None, [16], [0, 256]).ravel().astype(np.float64) / centre.size
    return np.concatenate([thumb, hist, np.sqrt(hist)])


def pixel_reason(decoded: np.ndarray) -> str | None:
    """Why a decoded image (`pipeline.data.imaging.load_decoded`) is not a chest X-ray by its pixels, or None."""
    height, width = decoded.shape[:2]
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT:
        return f"aspect ratio {aspect:.1f}:1 is not a chest film's (at most {MAX_ASPECT:.0f}:1); upload the whole film"
    # every check runs on a 256 x 256 copy (area average), so its cost does not grow with the image
    small = cv2.resize(decoded, (CHECK_SIDE, CHECK_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    if decoded.dtype != np.uint8:
        small *= 255 / np.iinfo(decoded.dtype).max
    if small.ndim == 3:
        red, green, blue = (small[:, :, i] for i in range(3))  # channel by channel: reducing axis 2 is slow
        spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
        coloured = float(np.mean(spread > COLOUR_LEVELS))
        if coloured > COLOUR_SHARE:
            return f"a colour image ({coloured:.0%} of pixels coloured); X-rays are grayscale, upload the radiograph"
        small = (red + green + blue) / 3
    if decoded.dtype != np.uint8:  # 16-bit images are stretched to their own range before the model sees them
        low, high = float(small.min()), float(small.max())
        small = (small - low) * (255 / (high - low)) if high > low else np.zeros_like(small)
    low, high = np.percentile(small, [1, 99])
    if high - low < MIN_SPREAD:
        return f"a nearly uniform image (98% of pixels within {high - low:.0f} grey levels); upload the radiograph"
    fine = float(np.std(small - cv2.GaussianBlur(small, (0, 0), 1.5)) / max(float(np.std(small)), 1e-6))
    if fine > MAX_FINE_DETAIL:
        return (f"{fine:.0%} of its contrast is pixel-level detail (noise, text or a fine pattern), unlike a "
                "radiograph; upload the radiograph")
    return None


def judge(decoded: np.ndarray, gray: np.ndarray, pooled: np.ndarray | None, stats: Typicality | None) -> Verdict:
    """The verdict on one image (decoded file, its gray image, its pooled features): pixel checks, then the run's.

    Without statistics (a run never exported) only the pixel checks apply and ``typicality`` is None.
    """
    score = None if stats is None or pooled is None else float(stats.score(pooled)[0])
    why = pixel_reason(decoded)
    if why is None and pooled is not None and not np.all(np.isfinite(pooled)):
        why = "the model's features are not finite numbers (NaN or infinity); the model files are damaged"
    if why is None and score is not None and not math.isfinite(score):
        why = "its typicality is not a finite number; the model or its statistics are damaged"
    if why is None and stats is not None:
        why = _polarity_reason(stats, gray)
    if why is None and score is not None and score < 1.0:
        why = (f"its features are unlike the training X-rays' (typicality {score:.2f}, below 1); "
               "expect a frontal chest X-ray like the NIH images")
    shown = None if score is None or not math.isfinite(score) else round(score, 4)
    return Verdict(why is None, shown, why)


def _polarity_reason(stats: Typicality, gray: np.ndarray) -> str | None:
    """What the polarity check measured when it fires, and advice only where the image is laid out like a film."""
    polarity = stats.inverted(gray)
    if polarity <= 0:
        return None
    layout, symmetry = stats.inverted_layout(gray), mirror_symmetry(gray)
    if layout >= INVERTED_LAYOUT and symmetry >= MIRROR_SYMMETRY:
        return (f"looks like an X-ray with inverted grey levels (bone dark): polarity {polarity:+.1f} (above 0), laid "
                f"out like an inverted chest film (correlation {layout:.2f}); export it as MONOCHROME2 / not inverted")
    return (f"its grey levels are unlike a chest X-ray's: the polarity check scores {polarity:+.1f} (above 0: nearer an"
            f" inverted film than a normal one), but its layout is not a chest film's (correlation with a film "
            f"{layout:.2f}, left-right symmetry {symmetry:.2f}); expect a frontal chest X-ray like the NIH images")


def mirror_symmetry(gray: np.ndarray) -> float:
    """Correlation (-1 to 1) of a 16 x 16 thumbnail with its left-right mirror image; chest films score high."""
    thumb = cv2.resize(gray, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float64)
    thumb -= thumb.mean()
    norm = float(np.sum(thumb * thumb))
    return float(np.sum(thumb * thumb[:, ::-1]) / norm) if norm > 0 else 0.0


def polarity_pair(gray: np.ndarray) -> np.ndarray:
    """``[2, features]``: `polarity_features` of a gray image and of its inversion, the polarity check's data."""
    return np.stack([polarity_features(gray), polarity_features(255 - gray)])


def fit(
    train_pooled: np.ndarray, valid_pooled: np.ndarray, train_polarity: np.ndarray, components: int = COMPONENTS
) -> Typicality:
    """Fit the statistics on the training images and set the threshold with held-out images.

    ``train_pooled`` / ``valid_pooled`` are the pooled features (n x channels); ``train_polarity`` is
    `polarity_pair` of each training image (n x 2 x features). The threshold is the largest distance of
    any held-out image: each training image scored by a fit on the other four fifths (5-fold), and every
    validation image scored by the full fit. So every image the run was made from passes, and at least
    `PASS_RATE` of the validation images do.
    """
    from sklearn.linear_model import LogisticRegression

    train = np.asarray(train_pooled, np.float64)
    valid = np.asarray(valid_pooled, np.float64)
    if len(train) < 10 or len(valid) < 1:
        raise InputError(
            f"typicality needs at least 10 training and 1 validation image, got {len(train)} and {len(valid)}"
        )
    folds = np.arange(len(train)) % 5
    held_out = [_fit_distribution(train[folds != f], components).distance(train[folds == f]) for f in range(5)]
    stats = _fit_distribution(train, components)
    valid_distances = np.sort(stats.distance(valid))
    need = math.ceil(PASS_RATE * len(valid_distances))  # this many validation images must pass
    threshold = max(float(valid_distances[need - 1]), float(np.max(np.concatenate([*held_out, valid_distances]))))

    pairs = np.asarray(train_polarity, np.float64)
    features = np.concatenate([pairs[:, 0], pairs[:, 1]])
    labels = np.r_[np.zeros(len(pairs)), np.ones(len(pairs))]
    polarity = LogisticRegression(C=POLARITY_C, max_iter=5000).fit(features, labels)
    weights, bias = polarity.coef_[0], float(polarity.intercept_[0])
    return replace(stats, threshold=threshold, polarity_weights=weights, polarity_bias=bias)


def _fit_distribution(train: np.ndarray, components: int) -> Typicality:
    """Mean, top principal components and residual variance of ``train``; threshold and polarity unset."""
    mean = train.mean(axis=0)
    _, singular, vt = np.linalg.svd(train - mean, full_matrices=False)
    eigen = singular**2 / (len(train) - 1)
    k = max(1, min(components, len(eigen) - 1))
    residual = max(float(eigen[k:].sum() / max(train.shape[1] - k, 1)), 1e-12)
    # each kept variance is shrunk towards the residual one, so no direction has a near-zero variance
    return Typicality(mean, vt[:k], eigen[:k] + residual, residual, 1.0, np.zeros(0), 0.0)


def save(stats: Typicality, run_dir: str | os.PathLike[str], info: dict) -> Path:
    """Write ``typicality.npz`` (the arrays) and ``typicality.json`` (threshold and ``info``) atomically."""
    run_dir = Path(run_dir)
    path = run_dir / STATS_FILE
    tmp = run_dir / f".{STATS_FILE}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, mean=stats.mean, components=stats.components, variances=stats.variances,
                 threshold=stats.threshold, residual_variance=stats.residual_variance,
                 polarity_weights=stats.polarity_weights, polarity_bias=stats.polarity_bias)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_json_atomic({"method": "mahalanobis-pca", "components": int(len(stats.variances)),
                       "threshold": stats.threshold, "pass_rate": PASS_RATE, **info}, run_dir / INFO_FILE)
    return path


def load(run_dir: str | os.PathLike[str]) -> Typicality | None:
    """The run's statistics, or None when it has none or they were fitted to other weights than its checkpoint's
    (then only the pixel checks apply: features of another model would be judged against the wrong cloud;
    `unavailable` says which). `InputError` naming the bad file when either file is damaged or implausible."""
    run_dir = Path(run_dir)
    if unavailable(run_dir) is not None:
        return None
    info = _info(run_dir)
    fix = "rerun `python -m pipeline export`"
    try:
        with np.load(run_dir / STATS_FILE) as arrays:
            stats = Typicality(arrays["mean"], arrays["components"], arrays["variances"],
                               float(arrays["residual_variance"]), 1.0,
                               arrays["polarity_weights"], float(arrays["polarity_bias"]))
            recorded = float(arrays["threshold"]) if "threshold" in arrays.files else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{run_dir / STATS_FILE}: unreadable typicality statistics ({reason(exc)}); {fix}") from None
    arrays_ok = all(np.all(np.isfinite(a)) for a in (stats.mean, stats.components, stats.variances,
                                                        stats.polarity_weights))
    if not (arrays_ok and np.all(stats.variances > 0) and stats.residual_variance > 0
            and math.isfinite(stats.polarity_bias) and stats.components.shape[1:] == stats.mean.shape):
        raise InputError(f"{run_dir / STATS_FILE}: damaged typicality statistics (non-finite or inconsistent); {fix}")
    threshold = info.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= MAX_THRESHOLD:
        raise InputError(
            f"{run_dir / INFO_FILE}: threshold {threshold!r} is not a distance between 0 and {MAX_THRESHOLD:.0e} "
            f"(at that the guard would pass everything or nothing); {fix}"
        )
    if recorded is not None and not math.isclose(recorded, threshold, rel_tol=1e-9):
        raise InputError(
            f"{run_dir / INFO_FILE}: threshold {threshold!r} differs from the {recorded!r} stored in {STATS_FILE} "
            f"(edited by hand?); {fix}"
        )
    return replace(stats, threshold=float(threshold))


def unavailable(run_dir: str | os.PathLike[str]) -> str | None:
    """Why the run has no usable typicality statistics (so only the pixel checks guard its images), or None."""
    run_dir = Path(run_dir)
    if not ((run_dir / STATS_FILE).is_file() and (run_dir / INFO_FILE).is_file()):
        return f"the run has no typicality statistics ({INFO_FILE}); `python -m pipeline export` adds them"
    info = _info(run_dir)
    checkpoint = run_dir / str(info.get("checkpoint", "best.keras"))
    if "checkpoint_sha256" in info and checkpoint.is_file() and sha256_of(checkpoint) != info["checkpoint_sha256"]:
        return (f"{INFO_FILE} was fitted to other weights than {checkpoint.name}; "
                "rerun `python -m pipeline export` to refit it")
    return None


def _info(run_dir: Path) -> dict:
    path = run_dir / INFO_FILE
    try:
        info = json.loads(path.read_text(), parse_constant=_no_constant)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({reason(exc)}); rerun `python -m pipeline export`") from None
    if not isinstance(info, dict):
        raise InputError(f"{path}: expected a JSON object; rerun `python -m pipeline export`")
    return info


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")
