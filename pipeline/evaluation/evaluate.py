"""Evaluate a model on a labelled image set: per-finding AUCs with intervals, thresholds, calibration, curves.

`evaluate_files` is what ``python -m pipeline evaluate`` runs: it reads the label file and the predictions (or
predicts the images with a checkpoint), chooses the operating thresholds, computes everything with
`evaluate_predictions`, and writes the evaluation folder through `pipeline.evaluation.results`, which owns its format.
Comparing evaluations is `pipeline.evaluation.compare`. TensorFlow is imported only to predict with a checkpoint.

About 640 lines, kept whole on purpose: `evaluate_files` (what the command does, as plain steps: check the
arguments, read the inputs, predict, choose the thresholds, compute, stamp the provenance, write) and
`evaluate_predictions` (the numbers) are the two halves of one evaluation, and the helpers below serve both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.files import sha256_cached, sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.core.text import count, plural
from pipeline.data import label_files
from pipeline.evaluation import conformal, metrics, provenance
from pipeline.evaluation.bootstrap import check_bootstrap
from pipeline.evaluation.results import (
    DEFAULT_THRESHOLD,
    LABELS_CSV,
    METRICS_JSON,
    PREDICTIONS_CSV,
    Bootstrap,
    Evaluation,
    OperatingPoint,
    Reliability,
    Summary,
    ThresholdSource,
    align,
    read_metrics,
    read_predictions,
    read_thresholds,
    write_conformal,
    write_evaluation,
    write_subgroups,
)
from pipeline.evaluation.subgroups import DEFAULT_AGE_EDGES, DEFAULT_MIN_COUNT, audit_evaluation, check_age_edges

if TYPE_CHECKING:
    import keras

CALIBRATION_BINS = 10


def evaluate_files(
    labels_file: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    images: str | Path | None = None,
    predictions_file: str | Path | None = None,
    valid_predictions: str | Path | None = None,
    valid_labels: str | Path | None = None,
    thresholds_file: str | Path | None = None,
    target_sensitivity: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
    subgroups: bool = True,
    age_edges: Sequence[int] = DEFAULT_AGE_EDGES,
    subgroup_min: int = DEFAULT_MIN_COUNT,
    miss_rate: float | None = None,
    false_alarm_rate: float | None = None,
) -> Evaluation:
    """Evaluate a checkpoint's (or a CSV's) predictions of a label file and write the evaluation folder ``out``.

    Parameters
    ----------
    labels_file
        Label CSV of the images evaluated (NIH Data_Entry or course format), or a prepared folder
        (`pipeline.data.prepare`), whose images a checkpoint then reads from its shards.
    checkpoint, images
        A ``.keras`` checkpoint and the folder of the labelled images (not needed for a prepared folder); or
        instead
    predictions_file
        A CSV with ``Image`` and one probability per finding (`pipeline.evaluation.results.read_predictions`).
    valid_predictions, valid_labels, thresholds_file
        At most one: a validation evaluation folder, validation labels (or a prepared folder) to predict with
        ``checkpoint``, or a JSON of thresholds. With neither, every threshold is 0.5.
    target_sensitivity
        With validation data: the thresholds reaching this sensitivity instead of maximising Youden's J.
    n_bootstrap, seed
        Bootstrap resamples for the AUC intervals (0: none) and their seed.
    warn
        Called with a one-line warning when some images cannot be read and are left out, or when nothing shows
        that ``valid_predictions`` are the checkpoint's scores (`_check_valid_scored_by`).
    subgroups, age_edges, subgroup_min
        The subgroup audit (`pipeline.evaluation.subgroups`), on wherever ages, sexes and views are known (the
        label file's own, else the shipped NIH metadata), so that "who does the model fail?" is answered for
        every model evaluated; it adds well under a second for the 55 test images, about a minute for the
        25,596 of the official test list with 1000 resamples on a busy machine (docs/subgroups.md). Then its
        age group boundaries, and the fewest positives (or negatives) a number may rest on.
    miss_rate, false_alarm_rate
        With validation data: conformal thresholds bounding each finding's miss rate (and false-alarm rate,
        default the miss rate), checked on these images, written as conformal.json and risk_coverage.csv
        (`pipeline.evaluation.conformal`).

    Returns
    -------
    Evaluation
        As written to ``out``; `pipeline.plots.write_evaluation_plots` adds its figures as HTML.
    """
    _check_arguments(labels_file, checkpoint, images, predictions_file, valid_predictions, valid_labels,
                     thresholds_file, target_sensitivity, n_bootstrap)
    if subgroups:
        _check_subgroup_options(age_edges, subgroup_min)
    conformal.check_request(miss_rate, false_alarm_rate, valid_predictions is not None or valid_labels is not None)
    inputs = _read_inputs(labels_file, images if checkpoint is not None else None, valid_predictions, valid_labels,
                          thresholds_file)
    # hashed before loading: the weights recorded are the ones scored even if the file is rewritten meanwhile
    checkpoint_sha256 = sha256_cached(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and valid_predictions is not None:
        _check_valid_scored_by(Path(valid_predictions), Path(checkpoint), warn)
    if checkpoint is not None:
        scored = _predict_checkpoint(checkpoint, inputs, labels_file, images, valid_labels, warn)
    else:
        scored = _Scored(inputs.labels, read_predictions(predictions_file), inputs.valid, {}, [],
                         Path(predictions_file).name)
    predictions = align(scored.labels, scored.predictions, Path(labels_file).name, scored.source_name)
    thresholds, source, threshold_notes = _choose_thresholds(
        inputs.thresholds, thresholds_file, scored.valid, target_sensitivity
    )
    evaluation = evaluate_predictions(
        scored.labels,
        predictions,
        thresholds=thresholds,
        threshold_source=source,
        target_sensitivity=target_sensitivity if source is ThresholdSource.VALIDATION_SENSITIVITY else None,
        n_bootstrap=n_bootstrap,
        seed=seed,
        notes=scored.notes + threshold_notes,
    )
    _stamp_provenance(
        evaluation.summary,
        labels_file=labels_file,
        labels_sha256=inputs.prepared.sha256 if inputs.prepared is not None else sha256_of(labels_file),
        checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        predictions_file=predictions_file,
        skipped=scored.skipped,
    )
    audit, metadata = (_subgroup_audit(evaluation, age_edges, subgroup_min, n_bootstrap, seed) if subgroups
                       else (None, None))
    if miss_rate is not None:  # calibrated on the validation data, checked on these images
        evaluation.conformal, evaluation.risk_coverage = conformal.from_tables(
            scored.valid, evaluation.labels, evaluation.predictions, miss_rate, false_alarm_rate,
            test=str(labels_file), n_bootstrap=n_bootstrap, seed=seed,
            out_of_distribution=scored.out_of_distribution)
        evaluation.conformal.calibration_sha256 = _calibration_sha256(valid_predictions, valid_labels,
                                                                      inputs.valid_prepared)

    def optional_files(folder: Path) -> None:  # into the same temporary folder: the whole folder or nothing
        write_subgroups(audit, metadata, folder)
        if evaluation.conformal is not None:
            write_conformal(evaluation.conformal, evaluation.risk_coverage, folder)

    write_evaluation(evaluation, out, optional_files)
    return evaluation


# --- the steps of evaluate_files, in order ----------------------------------------------------------------------

Validation = tuple[pd.DataFrame, pd.DataFrame, str]  # validation labels, their predictions, and a name for notes


@dataclass
class _Inputs:
    """Everything `evaluate_files` reads and checks before the (slow) predictions."""

    labels: pd.DataFrame
    prepared: Any  # the `input_pipeline.Source` of a prepared folder of the evaluated images, or None
    thresholds: dict[str, float] | None  # from `thresholds_file`
    valid: Validation | None  # from `valid_predictions`
    valid_table: pd.DataFrame | None  # from `valid_labels`, still to predict
    valid_prepared: Any  # `valid_labels` as a prepared folder, or None


@dataclass
class _Scored:
    """The evaluated images with their predictions, the validation data, and what the predicting noted."""

    labels: pd.DataFrame
    predictions: pd.DataFrame
    valid: Validation | None
    skipped: dict[str, str]  # unreadable image -> why
    notes: list[str]
    source_name: str  # where the predictions came from, for messages
    out_of_distribution: frozenset[str] = frozenset()  # images the run's guard flags (abstained on first)


def _check_arguments(
    labels_file: str | Path,
    checkpoint: str | Path | None,
    images: str | Path | None,
    predictions_file: str | Path | None,
    valid_predictions: str | Path | None,
    valid_labels: str | Path | None,
    thresholds_file: str | Path | None,
    target_sensitivity: float | None,
    n_bootstrap: int,
) -> None:
    """The rules between `evaluate_files`'s arguments, checked before anything is read."""
    from pipeline.data import prepared

    if (checkpoint is None) == (predictions_file is None):
        raise InputError("give one of `checkpoint` (a model to run) or `predictions_file` (its predictions)")
    if checkpoint is not None and images is None and not prepared.is_prepared(labels_file):
        raise InputError("`checkpoint` needs `images`, the folder holding the labelled images")
    if valid_labels is not None and checkpoint is None:
        raise InputError(
            "`valid_labels` needs `checkpoint` (to predict them); with `predictions_file` use `valid_predictions`"
        )
    if sum(x is not None for x in (valid_predictions, valid_labels, thresholds_file)) > 1:
        raise InputError("give at most one of `valid_predictions`, `valid_labels` and `thresholds_file`")
    check_bootstrap(n_bootstrap)
    target = target_sensitivity
    if target is not None and not (0 < target <= 1 and (valid_predictions or valid_labels)):
        raise InputError(
            f"`target_sensitivity` {target}: give a share in (0, 1] together with `valid_predictions` or "
            "`valid_labels`"
        )


def _read_inputs(
    labels_file: str | Path,
    images_dir: str | Path | None,
    valid_predictions: str | Path | None,
    valid_labels: str | Path | None,
    thresholds_file: str | Path | None,
) -> _Inputs:
    """Read every input but the predictions still to make; ``images_dir`` is given only to predict."""
    prepared = _prepared(labels_file)
    labels = prepared.table if prepared is not None else label_files.load_labels(labels_file, images_dir=images_dir)
    thresholds = read_thresholds(thresholds_file) if thresholds_file is not None else None
    valid = _validation_folder(Path(valid_predictions)) if valid_predictions is not None else None
    valid_prepared = _prepared(valid_labels) if valid_labels is not None else None
    valid_table = None
    if valid_labels is not None:
        if valid_prepared is None and images_dir is None:
            raise InputError("`valid_labels` as a label file needs `images`, the folder holding its images")
        valid_table = (valid_prepared.table if valid_prepared
                       else label_files.load_labels(valid_labels, images_dir=images_dir))
    return _Inputs(labels, prepared, thresholds, valid, valid_table, valid_prepared)


def _predict_checkpoint(
    checkpoint: str | Path,
    inputs: _Inputs,
    labels_file: str | Path,
    images: str | Path | None,
    valid_labels: str | Path | None,
    warn: Callable[[str], None] | None,
) -> _Scored:
    """Predict the evaluated images (and the validation images) with the checkpoint; note what was left out."""
    from pipeline.inference import predict
    from pipeline.networks import densenet

    net = densenet.load(checkpoint)
    labels, prepared, notes = inputs.labels, inputs.prepared, []
    skipped: dict[str, str] = {}
    if prepared is not None:
        predictions = predict.predict_prepared(net, prepared)
        if prepared.n_refused:
            notes.append(
                f"{prepared.n_refused} listed images were refused by `prepare` and are not here (see its manifest)"
            )
    else:
        labels, predictions, skipped = _predict_readable(net, labels, Path(images), Path(labels_file).name, warn)
    if skipped:
        image, why = next(iter(skipped.items()))
        notes.append(f"{len(skipped)} unreadable images left out, e.g. {image}: {why}")
    flagged: dict[str, str] = {}
    if prepared is None:  # the guard reads the original files; a prepared folder holds resized copies
        flagged = _guard(checkpoint, [Path(images) / image for image in labels["Image"]])
        notes += _guard_note(flagged, len(labels))
    valid = inputs.valid
    if inputs.valid_table is not None:
        name = Path(valid_labels).name
        if inputs.valid_prepared is not None:
            valid = (inputs.valid_table, predict.predict_prepared(net, inputs.valid_prepared), name)
        else:
            valid = (*_predict_readable(net, inputs.valid_table, Path(images), name, warn)[:2], name)
    names = {str(Path(images) / image): image for image in labels["Image"]} if prepared is None else {}
    return _Scored(labels, predictions, valid, skipped, notes, f"predictions of {checkpoint}",
                   frozenset(names[path] for path in flagged if path in names))


def _choose_thresholds(
    thresholds: dict[str, float] | None,
    thresholds_file: str | Path | None,
    valid: Validation | None,
    target_sensitivity: float | None,
) -> tuple[dict[str, float] | None, ThresholdSource, list[str]]:
    """The operating thresholds, where they came from, and notes: from a file, from validation data, or 0.5."""
    if thresholds is not None:
        return thresholds, ThresholdSource.FILE, [f"thresholds read from {Path(thresholds_file).name}"]
    if valid is None:
        return None, ThresholdSource.DEFAULT, []
    valid_truth, valid_scores, valid_name = valid
    chosen, notes = thresholds_from_validation(valid_truth, valid_scores, target_sensitivity)
    if target_sensitivity is None:
        source, rule = ThresholdSource.VALIDATION_YOUDEN, "maximise Youden's J"
    else:
        source, rule = ThresholdSource.VALIDATION_SENSITIVITY, f"reach sensitivity {target_sensitivity:g}"
    return chosen, source, [f"thresholds {rule} on {valid_name} ({len(valid_truth)} images)", *notes]


def _stamp_provenance(
    summary: Summary,
    *,
    labels_file: str | Path,
    labels_sha256: str,
    checkpoint: str | Path | None,
    checkpoint_sha256: str | None,
    predictions_file: str | Path | None,
    skipped: dict[str, str],
) -> None:
    """Record in the summary when and from what the evaluation was made."""
    summary.created = datetime.now(UTC).isoformat(timespec="seconds")
    summary.checkpoint = str(checkpoint) if checkpoint is not None else None
    summary.checkpoint_sha256 = checkpoint_sha256
    summary.predictions_file = str(predictions_file) if predictions_file is not None else None
    summary.labels_file = str(labels_file)
    summary.labels_sha256 = labels_sha256
    summary.skipped_images = skipped


def thresholds_from_validation(
    labels: pd.DataFrame, predictions: pd.DataFrame, target_sensitivity: float | None = None
) -> tuple[dict[str, float], list[str]]:
    """Per-finding operating thresholds chosen on validation data (Youden's J, or a target sensitivity).

    Returns
    -------
    thresholds, notes
        A finding whose validation set lacks a class keeps 0.5, and a note says so.
    """
    y, p = matrices(labels, align(labels, predictions, "validation labels", "validation predictions"))
    thresholds, notes = {}, []
    for j, finding in enumerate(FINDINGS):
        chosen = metrics.choose_threshold(y[:, j], p[:, j], target_sensitivity)
        if chosen is None:
            notes.append(f"{finding}: the validation set has no positive or no negative image; threshold 0.5 used")
        thresholds[finding] = DEFAULT_THRESHOLD if chosen is None else chosen
    return thresholds, notes


# --- computing from tables -------------------------------------------------------------------------------------


def evaluate_predictions(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    thresholds: Mapping[str, float] | None = None,
    threshold_source: ThresholdSource = ThresholdSource.GIVEN,
    target_sensitivity: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> Evaluation:
    """All metrics of predictions against labels covering the same images.

    Parameters
    ----------
    labels
        Canonical label table (`pipeline.data.label_files.load_labels`).
    predictions
        ``Image`` and the 14 probabilities (`read_predictions`), any order.
    thresholds, threshold_source, target_sensitivity
        Operating threshold per finding and where it came from (with the target of
        ``ThresholdSource.VALIDATION_SENSITIVITY``); None means 0.5 for every finding (`ThresholdSource.DEFAULT`).
    n_bootstrap, seed
        Bootstrap resamples of the images for the AUC intervals (0: no intervals) and their seed.
    notes
        Notes to carry into metrics.json ahead of those the computation adds.

    Returns
    -------
    Evaluation
        Its ``summary`` lacks where the inputs came from (see `evaluate_files`, which adds it).
    """
    check_bootstrap(n_bootstrap)
    if len(labels) == 0:
        raise InputError("no images to evaluate: the label file has no rows")
    predictions = align(labels, predictions, "labels", "predictions")
    notes = list(notes)
    if thresholds is None:
        thresholds, threshold_source = dict.fromkeys(FINDINGS, DEFAULT_THRESHOLD), ThresholdSource.DEFAULT
        notes.append("no validation predictions or thresholds given: every threshold is 0.5")
    y, p = matrices(labels, predictions)
    aucs = metrics.bootstrap_auc(y, p, n_bootstrap, seed) if n_bootstrap else np.full((0, len(FINDINGS)), np.nan)
    per_finding = {f: _finding_metrics(y[:, j], p[:, j], thresholds[f], aucs[:, j]) for j, f in enumerate(FINDINGS)}

    for j, finding in enumerate(FINDINGS):
        valid = per_finding[finding]["valid_resamples"]
        if per_finding[finding]["auc"] is None:
            notes.append(f"{finding}: {_missing_class(y[:, j])} among the {len(y)} images; AUC and AP are undefined")
        elif valid < n_bootstrap:
            notes.append(
                f"{finding}: {n_bootstrap - valid} of {n_bootstrap} bootstrap resamples had no positive "
                "or no negative image and were dropped from its interval"
            )
    defined = [j for j, finding in enumerate(FINDINGS) if per_finding[finding]["auc"] is not None]
    mean_samples = metrics.macro_mean(aucs)
    if len(defined) < len(FINDINGS):
        notes.append(f"mean AUC over the {len(defined)} findings with a defined AUC")
    partial = int(np.isnan(aucs[:, defined]).any(axis=1).sum())
    if defined and partial:
        notes.append(
            f"mean AUC interval: in {partial} of {n_bootstrap} resamples some finding had no positive or no negative "
            "image; there the mean is over the findings with a defined AUC"
        )

    def by_finding(key: str) -> dict[str, Any]:
        return {finding: per_finding[finding][key] for finding in FINDINGS}

    n_positive = y.sum(axis=0)
    summary = Summary(
        n_images=len(labels),
        findings=list(FINDINGS),
        n_positive={f: int(n) for f, n in zip(FINDINGS, n_positive, strict=True)},
        prevalence={f: float(n / len(labels)) for f, n in zip(FINDINGS, n_positive, strict=True)},
        auc=by_finding("auc"),
        auc_ci=by_finding("auc_ci"),
        mean_auc=float(np.mean([per_finding[FINDINGS[j]]["auc"] for j in defined])) if defined else None,
        mean_auc_ci=interval(mean_samples) if defined else None,
        average_precision=by_finding("average_precision"),
        threshold_source=threshold_source,
        target_sensitivity=target_sensitivity,
        thresholds={f: float(thresholds[f]) for f in FINDINGS},
        at_threshold={f: OperatingPoint(**point) for f, point in by_finding("at_threshold").items()},
        brier=by_finding("brier"),
        calibration=by_finding("calibration"),
        bootstrap=Bootstrap(
            n_resamples=n_bootstrap,
            seed=seed,
            method="percentile interval, resampling images with replacement",
            valid_resamples=by_finding("valid_resamples"),
            mean_valid_resamples=int(np.isfinite(mean_samples).sum()) if defined else None,
        ),
        notes=notes,
    )
    roc, pr = _curve_frames(y, p)
    return Evaluation(summary, predictions, labels, roc, pr, _calibration_frame(summary.calibration))


def _finding_metrics(y: np.ndarray, p: np.ndarray, threshold: float, bootstrapped: np.ndarray) -> dict[str, Any]:
    """The metrics.json entries of one finding; ``bootstrapped`` are its AUCs on the resamples."""
    auc = metrics.roc_auc(y, p)
    curve = metrics.reliability_curve(y, p, CALIBRATION_BINS)
    return {
        "auc": auc,
        "auc_ci": None if auc is None else interval(bootstrapped),
        "valid_resamples": None if auc is None else int(np.isfinite(bootstrapped).sum()),
        "average_precision": metrics.average_precision(y, p),
        "at_threshold": metrics.metrics_at_threshold(y, p, threshold),
        "brier": metrics.brier_score(y, p),
        "calibration": curve,
    }


def _curve_frames(y: np.ndarray, p: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """roc.csv and pr.csv: the curves of the findings with a defined AUC, one after the other."""
    roc_parts, pr_parts = [], []
    for j, finding in enumerate(FINDINGS):
        roc = metrics.roc_curve(y[:, j], p[:, j])
        if roc is None:
            continue
        fpr, tpr, thresholds = roc
        roc_parts.append(pd.DataFrame({"finding": finding, "fpr": fpr, "tpr": tpr, "threshold": thresholds}))
        precision, recall, thresholds = metrics.precision_recall_curve(y[:, j], p[:, j], drop_intermediate=True)
        thresholds = np.r_[thresholds, np.nan]  # the last point (recall 0, precision 1) has none
        pr_parts.append(
            pd.DataFrame({"finding": finding, "recall": recall, "precision": precision, "threshold": thresholds})
        )
    return (
        _concat(roc_parts, ["finding", "fpr", "tpr", "threshold"]),
        _concat(pr_parts, ["finding", "recall", "precision", "threshold"]),
    )


def _calibration_frame(calibration: Mapping[str, Reliability]) -> pd.DataFrame:
    """calibration.csv: one row per finding and probability bin (empty bins have no mean or rate)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = {"bin": np.arange(CALIBRATION_BINS), "bin_low": edges[:-1], "bin_high": edges[1:]}
    parts = [
        pd.DataFrame(
            {"finding": finding, **bins, **{key: np.array(values, dtype=float) for key, values in asdict(c).items()}}
        )
        for finding, c in calibration.items()
    ]
    return pd.concat(parts, ignore_index=True).astype({"count": int})



def _predict_readable(
    net: keras.Model, labels: pd.DataFrame, images_dir: Path, name: str, warn: Callable[[str], None] | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Predict the images of ``labels``; leave out, with a warning, those that cannot be read."""
    from pipeline.inference import predict

    predictions, skipped = predict.predict_table(net, labels, images_dir)
    if not skipped:
        return labels, predictions, skipped
    why = next(iter(skipped.values()))
    if len(skipped) == len(labels):
        raise InputError(f"{name}: none of the {len(labels)} images could be read ({why})")
    if warn is not None:
        warn(f"{name}: {count(len(skipped), 'image')} could not be read and {plural(len(skipped), 'is', 'are')} "
             f"left out ({why})")
    return labels[~labels["Image"].isin(list(skipped))].reset_index(drop=True), predictions, skipped


def _calibration_sha256(valid_predictions: str | Path | None, valid_labels: str | Path | None,
                        valid_prepared: Any) -> str | None:
    """The SHA-256 of the validation label file conformal thresholds were calibrated on (None where unknown)."""
    if valid_prepared is not None:
        return valid_prepared.sha256
    if valid_labels is not None:
        return sha256_of(valid_labels)
    folder = Path(valid_predictions) if Path(valid_predictions).is_dir() else Path(valid_predictions).parent
    try:
        return read_metrics(folder).labels_sha256
    except InputError:  # predictions without a readable metrics.json beside them
        return None


def _check_valid_scored_by(valid_predictions: Path, checkpoint: Path, warn: Callable[[str], None] | None) -> None:
    """Thresholds chosen on validation scores hold only for the weights that scored them: refuse the evaluation of
    other weights (`provenance.match`), and say so when the evaluation cannot show whose scores they are."""
    folder = valid_predictions if valid_predictions.is_dir() else valid_predictions.parent
    if not (folder / METRICS_JSON).is_file():
        return  # a predictions file of the user's own: nothing to check it against
    matched = provenance.match(folder, checkpoint, str(valid_predictions))
    if matched.binding is provenance.Binding.OTHER_WEIGHTS:
        raise InputError(f"`valid_predictions` {valid_predictions}: the scores of other weights than "
                         f"{checkpoint.name} (metrics.json records another checkpoint), so thresholds chosen on them "
                         "would not fit it; evaluate the validation set with this checkpoint, or give `valid_labels`")
    if matched.note is not None and warn is not None:
        warn(f"`valid_predictions` {valid_predictions}: {matched.note}")


def _validation_folder(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Labels and predictions of a validation evaluation, from its folder or the predictions.csv in it.

    Validation predictions alone cannot choose thresholds: their labels come from the labels.csv beside them.
    """
    folder, file = (path, path / PREDICTIONS_CSV) if path.is_dir() else (path.parent, path)
    labels_file = folder / LABELS_CSV
    if not labels_file.is_file():
        raise InputError(
            f"`valid_predictions` {path}: no {LABELS_CSV} beside it for the validation labels; "
            "evaluate the validation set first and pass that evaluation folder"
        )
    labels = label_files.load_labels(labels_file)
    return labels, align(labels, read_predictions(file), str(labels_file), str(file)), str(path)


# --- the subgroup audit (issue 18) ---------------------------------------------------------------------------------


def _check_subgroup_options(age_edges: Sequence[int], subgroup_min: int) -> None:
    """The audit's options, checked before any (slow) prediction."""
    check_age_edges(age_edges)
    if subgroup_min < 1:
        raise InputError(f"`subgroup_min` {subgroup_min}: give 1 or more (the fewest positives a number may rest on)",
                         "subgroup_min")


def _subgroup_audit(evaluation: Evaluation, age_edges: Sequence[int], subgroup_min: int, n_bootstrap: int,
                    seed: int) -> tuple[Any, pd.DataFrame | None]:
    """The audit and its metadata table (None, None without metadata); a note on it goes into metrics.json."""
    audit, metadata, note = audit_evaluation(
        evaluation, age_edges=age_edges, min_count=subgroup_min, n_bootstrap=n_bootstrap, seed=seed)
    evaluation.summary.notes.append(note)
    return audit, metadata


# --- small helpers, shared with pipeline.evaluation.compare ------------------------------------------------------


def _guard(checkpoint: str | Path, paths: list[Path]) -> dict[str, str]:
    """``{path: reason}`` of the images the run's out-of-distribution guard flags."""
    from pipeline.inference import serving

    return serving.flag_paths(checkpoint, paths)


def _guard_note(flagged: dict[str, str], n_images: int) -> list[str]:
    """A note counting the images the run's out-of-distribution guard flags (they stay in the metrics)."""
    if not flagged:
        return []
    path, why = next(iter(flagged.items()))
    return [
        f"{len(flagged)} of {n_images} images flagged out of distribution by the run's guard (kept in the "
        f"metrics), e.g. {Path(path).name}: {why}"
    ]


def _prepared(path: str | Path) -> Any:
    """The `pipeline.data.input_pipeline.Source` of a prepared folder, or None for a label file."""
    from pipeline.data import prepared

    if not prepared.is_prepared(path):
        return None
    from pipeline.data import input_pipeline

    return input_pipeline.open_source(path)


def matrices(labels: pd.DataFrame, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n, 14) labels and probabilities of aligned tables (see `pipeline.evaluation.results.align`)."""
    return labels[list(FINDINGS)].to_numpy(dtype=np.int8), predictions[list(FINDINGS)].to_numpy(dtype=np.float64)


def interval(samples: np.ndarray) -> list[float] | None:
    """The percentile 95% interval of bootstrap samples as a JSON-ready list, None when undefined."""
    bounds = metrics.percentile_interval(samples)
    return None if bounds is None else list(bounds)


def _missing_class(y: np.ndarray) -> str:
    return "no positive image" if not y.any() else "no negative image"


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
