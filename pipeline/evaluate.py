"""Evaluate a model on a labelled image set (`python -m pipeline evaluate`) and compare evaluations (`compare`).

An evaluation folder is self-describing; the dashboard and `compare` read nothing else:

- ``predictions.csv``: ``Image`` and the 14 probabilities;
- ``labels.csv``: the labels scored against, in the course format (``Image``, the 14 findings, ``PatientId``);
- ``metrics.json``: per finding the AUC with its bootstrap 95% interval, average precision, prevalence, the
  operating threshold and sensitivity, specificity, PPV, NPV, F1 and confusion counts there, Brier score and
  calibration; the macro mean AUC with its interval; where the predictions, labels and thresholds came from;
- ``roc.csv``, ``pr.csv``, ``calibration.csv``: the curves, so that plots need no recomputation.

Each file is written through a temporary file and a rename, and ``metrics.json`` last, so a folder with a
``metrics.json`` is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline import data, metrics
from pipeline.errors import InputError, reason
from pipeline.files import sha256_of, write_csv_atomic, write_json_atomic
from pipeline.findings import FINDINGS

PREDICTIONS = "predictions.csv"
LABELS = "labels.csv"
METRICS = "metrics.json"
ROC = "roc.csv"
PR = "pr.csv"
CALIBRATION = "calibration.csv"
DEFAULT_THRESHOLD = 0.5
CALIBRATION_BINS = 10
SHOWN = 3  # how many offending names an error message lists


@dataclass
class Evaluation:
    """Everything an evaluation folder holds, in memory (see `write_evaluation`)."""

    metrics: dict[str, Any]
    predictions: pd.DataFrame  # Image + 14 probabilities, in the order of the labels
    labels: pd.DataFrame  # canonical label table
    roc: pd.DataFrame  # finding, fpr, tpr, threshold
    pr: pd.DataFrame  # finding, recall, precision, threshold (NaN for the last point, recall 0)
    calibration: pd.DataFrame  # finding, bin, bin_low, bin_high, mean_predicted, observed, count


# --- reading inputs --------------------------------------------------------------------------------------------


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions CSV: ``Image`` and one probability column per finding (other columns are ignored).

    Raises
    ------
    InputError
        A missing column, a duplicated image, or a probability that is empty, not a number or outside [0, 1].
    """
    path = Path(path)
    raw = data.read_csv(path)
    need = "a predictions CSV needs Image and one probability column per finding"
    missing = [c for c in ("Image", *FINDINGS) if c not in raw.columns]
    if missing:
        raise InputError(f"{path.name}: missing column {_first(missing)}; {need}")
    table = pd.DataFrame({"Image": raw["Image"].astype(str).str.strip()})
    for finding in FINDINGS:
        values = pd.to_numeric(raw[finding], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path.name}: column {finding!r} row {row + 2} has {raw[finding].iloc[row]!r}; "
                "probabilities must be numbers from 0 to 1"
            )
        table[finding] = values.astype(np.float64).to_numpy()
    duplicated = table["Image"][table["Image"].duplicated()]
    if len(duplicated):
        raise InputError(f"{path.name}: image {duplicated.iloc[0]!r} has more than one row; keep one per image")
    return table


def align(labels: pd.DataFrame, predictions: pd.DataFrame, labels_name: str, predictions_name: str) -> pd.DataFrame:
    """The predictions in the order of the labels; `InputError` unless both cover exactly the same images."""
    labelled, predicted = pd.Index(labels["Image"]), pd.Index(predictions["Image"])
    unpredicted = labelled.difference(predicted, sort=False)
    unlabelled = predicted.difference(labelled, sort=False)
    if len(unpredicted) or len(unlabelled):
        problems = []
        if len(unpredicted):
            problems.append(
                f"{len(unpredicted)} of {len(labelled)} labelled images have no prediction ({_first(unpredicted)})"
            )
        if len(unlabelled):
            problems.append(f"{len(unlabelled)} predicted images have no label ({_first(unlabelled)})")
        raise InputError(
            f"{predictions_name} and {labels_name} do not cover the same images: {'; '.join(problems)}; "
            "predict exactly the labelled images"
        )
    return predictions.set_index("Image").loc[labelled].reset_index()


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Read ``{finding: threshold}`` for all 14 findings from a JSON file, or the ``thresholds`` of a metrics.json."""
    path = Path(path)
    hint = 'give a JSON object {"Atelectasis": 0.31, ...} with all 14 findings, or an evaluation\'s metrics.json'
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: not readable JSON ({reason(exc)}); {hint}") from None
    if isinstance(content, dict) and isinstance(content.get("thresholds"), dict):
        content = content["thresholds"]
    if not isinstance(content, dict):
        raise InputError(f"{path.name}: not a JSON object; {hint}")
    missing = [f for f in FINDINGS if f not in content]
    if missing:
        raise InputError(f"{path.name}: no threshold for {_first(missing)}; {hint}")
    bad = [f for f in FINDINGS if isinstance(content[f], bool) or not isinstance(content[f], int | float)]
    if bad:
        raise InputError(f"{path.name}: threshold of {bad[0]} is {content[bad[0]]!r}, not a number; {hint}")
    return {f: float(content[f]) for f in FINDINGS}


def thresholds_from_validation(
    labels: pd.DataFrame, predictions: pd.DataFrame, target_sensitivity: float | None = None
) -> tuple[dict[str, float], list[str]]:
    """Per-finding operating thresholds chosen on validation data (Youden's J, or a target sensitivity).

    Returns
    -------
    thresholds, notes
        A finding whose validation set lacks a class keeps 0.5, and a note says so.
    """
    y, p = _matrices(labels, align(labels, predictions, "validation labels", "validation predictions"))
    thresholds, notes = {}, []
    for j, finding in enumerate(FINDINGS):
        chosen = metrics.choose_threshold(y[:, j], p[:, j], target_sensitivity)
        if chosen is None:
            notes.append(f"{finding}: the validation set has no positive or no negative image; threshold 0.5 used")
        thresholds[finding] = DEFAULT_THRESHOLD if chosen is None else chosen
    return thresholds, notes


# --- computing -------------------------------------------------------------------------------------------------


def evaluate_predictions(
    labels: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    thresholds: Mapping[str, float] | None = None,
    threshold_source: str = "given",
    n_bootstrap: int = 1000,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> Evaluation:
    """All metrics of predictions against labels covering the same images.

    Parameters
    ----------
    labels
        Canonical label table (`pipeline.data.load_labels`).
    predictions
        ``Image`` and the 14 probabilities (`read_predictions`), any order.
    thresholds, threshold_source
        Operating threshold per finding and a word on where it came from; None means 0.5 for every finding
        (``threshold_source`` "default_0.5").
    n_bootstrap, seed
        Bootstrap resamples of the images for the AUC intervals (0: no intervals) and their seed.
    notes
        Notes to carry into metrics.json ahead of those the computation adds.

    Returns
    -------
    Evaluation
        ``metrics`` has the keys of metrics.json except where the inputs came from (see `evaluate_from_args`).
    """
    if n_bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more, got {n_bootstrap}")
    if len(labels) == 0:
        raise InputError("no images to evaluate: the label file has no rows")
    predictions = align(labels, predictions, "labels", "predictions")
    notes = list(notes)
    if thresholds is None:
        thresholds, threshold_source = dict.fromkeys(FINDINGS, DEFAULT_THRESHOLD), "default_0.5"
        notes.append("no validation predictions or thresholds given: every threshold is 0.5")
    y, p = _matrices(labels, predictions)
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
    summary = {
        "n_images": len(labels),
        "findings": list(FINDINGS),
        "n_positive": {f: int(n) for f, n in zip(FINDINGS, n_positive, strict=True)},
        "prevalence": {f: float(n / len(labels)) for f, n in zip(FINDINGS, n_positive, strict=True)},
        "auc": by_finding("auc"),
        "auc_ci": by_finding("auc_ci"),
        "mean_auc": float(np.mean([per_finding[FINDINGS[j]]["auc"] for j in defined])) if defined else None,
        "mean_auc_ci": _interval(mean_samples) if defined else None,
        "average_precision": by_finding("average_precision"),
        "threshold_source": threshold_source,
        "thresholds": {f: float(thresholds[f]) for f in FINDINGS},
        "at_threshold": by_finding("at_threshold"),
        "brier": by_finding("brier"),
        "calibration": by_finding("calibration"),
        "bootstrap": {
            "n_resamples": n_bootstrap,
            "seed": seed,
            "method": "percentile interval, resampling images with replacement",
            "valid_resamples": by_finding("valid_resamples"),
            "mean_valid_resamples": int(np.isfinite(mean_samples).sum()) if defined else None,
        },
        "notes": notes,
    }
    roc, pr = _curve_frames(y, p)
    return Evaluation(summary, predictions, labels, roc, pr, _calibration_frame(summary["calibration"]))


def _finding_metrics(y: np.ndarray, p: np.ndarray, threshold: float, bootstrapped: np.ndarray) -> dict[str, Any]:
    """The metrics.json entries of one finding; ``bootstrapped`` are its AUCs on the resamples."""
    auc = metrics.roc_auc(y, p)
    curve = metrics.reliability_curve(y, p, CALIBRATION_BINS)
    return {
        "auc": auc,
        "auc_ci": None if auc is None else _interval(bootstrapped),
        "valid_resamples": None if auc is None else int(np.isfinite(bootstrapped).sum()),
        "average_precision": metrics.average_precision(y, p),
        "at_threshold": metrics.metrics_at_threshold(y, p, threshold),
        "brier": metrics.brier_score(y, p),
        "calibration": {
            "mean_predicted": _floats(curve.mean_predicted),
            "observed": _floats(curve.observed),
            "count": curve.count.tolist(),
        },
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


def _calibration_frame(calibration: Mapping[str, Mapping[str, list]]) -> pd.DataFrame:
    """calibration.csv: one row per finding and probability bin (empty bins have no mean or rate)."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = {"bin": np.arange(CALIBRATION_BINS), "bin_low": edges[:-1], "bin_high": edges[1:]}
    parts = [
        pd.DataFrame(
            {"finding": finding, **bins, **{key: np.array(values, dtype=float) for key, values in curve.items()}}
        )
        for finding, curve in calibration.items()
    ]
    return pd.concat(parts, ignore_index=True).astype({"count": int})


def predict_table(model: Any, labels: pd.DataFrame, images_dir: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Predict the images of a label table with a loaded model.

    Returns
    -------
    predictions, skipped
        ``Image`` and the 14 probabilities of the images that could be read, and ``{image: reason}`` for the
        others.
    """
    from pipeline import model as model_lib
    from pipeline import predict

    names = model_lib.finding_names(model)
    if sorted(names) != sorted(FINDINGS):
        raise InputError(f"the checkpoint predicts {_first(names)}, not the 14 NIH findings; use a model from train")
    paths = [os.fspath(Path(images_dir) / image) for image in labels["Image"]]
    image_of = dict(zip(paths, labels["Image"], strict=True))
    result = predict.predict_paths(model, paths)
    table = pd.DataFrame(result.probabilities.astype(np.float64), columns=names)[list(FINDINGS)]
    table.insert(0, "Image", [image_of[path] for path in result.paths])
    return table, {image_of[path]: why for path, why in result.errors.items()}


# --- files -----------------------------------------------------------------------------------------------------


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> Path:
    """Write an evaluation folder (see the module docstring); returns its metrics.json."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    # A stale metrics.json would vouch for the half-replaced files below until the new one is written.
    (out / METRICS).unlink(missing_ok=True)
    write_csv_atomic(evaluation.predictions, out / PREDICTIONS)
    write_csv_atomic(data.to_course_format(evaluation.labels), out / LABELS)
    write_csv_atomic(evaluation.roc, out / ROC)
    write_csv_atomic(evaluation.pr, out / PR)
    write_csv_atomic(evaluation.calibration, out / CALIBRATION)
    write_json_atomic(evaluation.metrics, out / METRICS)
    return out / METRICS


def load_eval(eval_dir: str | Path) -> dict[str, Any]:
    """Read an evaluation folder for display.

    Returns
    -------
    dict
        ``dir`` (Path), ``metrics`` (metrics.json as a dict), and DataFrames ``roc``, ``pr``, ``calibration``.
    """
    folder = Path(eval_dir)
    path = folder / METRICS
    if not path.is_file():
        raise InputError(f"{folder}: not an evaluation folder (no {METRICS}); run `python -m pipeline evaluate`")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({reason(exc)}); run the evaluation again") from None
    frames = {}
    for key, name in (("roc", ROC), ("pr", PR), ("calibration", CALIBRATION)):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: {name} is missing; run the evaluation again")
        frames[key] = pd.read_csv(folder / name)
    return {"dir": folder, "metrics": content, **frames}


def evaluate_from_args(args: argparse.Namespace) -> None:
    """`python -m pipeline evaluate`: predictions (from a checkpoint or a CSV) and labels in, a folder out."""
    if args.checkpoint is not None and args.images is None:
        raise InputError("--checkpoint needs --images DIR, the folder holding the labelled images")
    if args.valid_labels is not None and args.checkpoint is None:
        raise InputError(
            "--valid-labels needs --checkpoint (to predict them); with --predictions use --valid-predictions"
        )
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more, got {args.bootstrap}")
    target = args.target_sensitivity
    if target is not None and not (0 < target <= 1 and (args.valid_predictions or args.valid_labels)):
        raise InputError(
            f"--target-sensitivity {target}: give a share in (0, 1] together with --valid-predictions or --valid-labels"
        )
    # Every input is read and checked before the (slow) predictions.
    thresholds = read_thresholds(args.thresholds) if args.thresholds is not None else None
    valid = _validation_folder(Path(args.valid_predictions)) if args.valid_predictions is not None else None
    images_dir = args.images if args.checkpoint is not None else None
    labels = data.load_labels(args.labels, images_dir=images_dir)
    valid_labels = data.load_labels(args.valid_labels, images_dir=images_dir) if args.valid_labels else None
    notes: list[str] = []
    skipped: dict[str, str] = {}

    if args.checkpoint is not None:
        from pipeline import model as model_lib

        model = model_lib.load(args.checkpoint)
        labels, predictions, skipped = _predict_readable(model, labels, args.images, Path(args.labels).name)
        if skipped:
            image, why = next(iter(skipped.items()))
            notes.append(f"{len(skipped)} unreadable images left out, e.g. {image}: {why}")
        notes += _guard_note(args.checkpoint, [Path(args.images) / image for image in labels["Image"]])
        if valid_labels is not None:
            name = Path(args.valid_labels).name
            valid = (*_predict_readable(model, valid_labels, args.images, name)[:2], name)
    else:
        predictions = read_predictions(args.predictions)
    predictions = align(labels, predictions, Path(args.labels).name, _source_name(args))

    if thresholds is not None:
        source = "file"
        notes.append(f"thresholds read from {Path(args.thresholds).name}")
    elif valid is not None:
        valid_labels, valid_predictions, valid_name = valid
        thresholds, threshold_notes = thresholds_from_validation(valid_labels, valid_predictions, target)
        if target is None:
            source, rule = "validation_youden", "maximise Youden's J"
        else:
            source, rule = f"validation_sensitivity_{target:g}", f"reach sensitivity {target:g}"
        notes += [f"thresholds {rule} on {valid_name} ({len(valid_labels)} images)", *threshold_notes]
    else:
        source = "default_0.5"

    evaluation = evaluate_predictions(
        labels,
        predictions,
        thresholds=thresholds,
        threshold_source=source,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        notes=notes,
    )
    evaluation.metrics = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
        "predictions_file": str(args.predictions) if args.predictions is not None else None,
        "labels_file": str(args.labels),
        "labels_sha256": sha256_of(args.labels),
        **({"skipped_images": skipped} if skipped else {}),
        **evaluation.metrics,
    }
    write_evaluation(evaluation, args.out)
    print(format_metrics(evaluation.metrics))
    print(f"wrote {PREDICTIONS}, {LABELS}, {METRICS}, {ROC}, {PR}, {CALIBRATION} to {args.out}")


def _guard_note(checkpoint: Path, paths: list[Path]) -> list[str]:
    """A note counting the images the run's out-of-distribution guard flags (they stay in the metrics)."""
    from pipeline import serving

    flagged = serving.flag_paths(checkpoint, paths)
    if not flagged:
        return []
    path, why = next(iter(flagged.items()))
    return [f"{len(flagged)} of {len(paths)} images flagged out of distribution by the run's guard (kept in the "
            f"metrics), e.g. {Path(path).name}: {why}"]


def _predict_readable(
    model: Any, labels: pd.DataFrame, images_dir: Path, name: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Predict the images of ``labels``; leave out, with a warning, those that cannot be read."""
    predictions, skipped = predict_table(model, labels, images_dir)
    if not skipped:
        return labels, predictions, skipped
    why = next(iter(skipped.values()))
    if len(skipped) == len(labels):
        raise InputError(f"{name}: none of the {len(labels)} images could be read ({why})")
    print(f"warning: {name}: {len(skipped)} images could not be read and are left out ({why})", file=sys.stderr)
    return labels[~labels["Image"].isin(list(skipped))].reset_index(drop=True), predictions, skipped


def _validation_folder(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Labels and predictions of a validation evaluation, from its folder or the predictions.csv in it.

    Validation predictions alone cannot choose thresholds: their labels come from the labels.csv beside them.
    """
    folder, file = (path, path / PREDICTIONS) if path.is_dir() else (path.parent, path)
    labels_file = folder / LABELS
    if not labels_file.is_file():
        raise InputError(
            f"--valid-predictions {path}: no {LABELS} beside it for the validation labels; "
            "evaluate the validation set first and pass that evaluation folder"
        )
    labels = data.load_labels(labels_file)
    return labels, align(labels, read_predictions(file), str(labels_file), str(file)), str(path)


def _source_name(args: argparse.Namespace) -> str:
    return Path(args.predictions).name if args.predictions is not None else f"predictions of {args.checkpoint}"


def format_metrics(summary: Mapping[str, Any]) -> str:
    """A plain-text table of metrics.json: AUC with interval, AP, and the operating point per finding."""
    lines = [
        f"{summary['n_images']} images, thresholds: {summary['threshold_source']}",
        f"{'finding':<20} {'AUC':>6}  {'95% CI':<15} {'AP':>6} {'thresh':>7} {'sens':>6} {'spec':>6} {'PPV':>6}",
    ]
    for finding in summary["findings"]:
        point = summary["at_threshold"][finding]
        lines.append(
            f"{finding:<20} {_num(summary['auc'][finding]):>6}  {_ci(summary['auc_ci'][finding]):<15} "
            f"{_num(summary['average_precision'][finding]):>6} {summary['thresholds'][finding]:>7.3f} "
            f"{_num(point['sensitivity']):>6} {_num(point['specificity']):>6} {_num(point['ppv']):>6}"
        )
    lines.append(f"{'mean':<20} {_num(summary['mean_auc']):>6}  {_ci(summary['mean_auc_ci'])}")
    return "\n".join(lines)


# --- comparing evaluations -------------------------------------------------------------------------------------


def compare(eval_dirs: Sequence[str | Path], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare evaluations of the same images against the first one, finding by finding and on the mean.

    Parameters
    ----------
    eval_dirs
        Two or more evaluation folders; the first is the reference.
    n_bootstrap, seed
        Paired bootstrap resamples (both models on the same resampled images) for the intervals; 0: none.

    Returns
    -------
    dict
        ``reference``, ``n_images``, ``labels_sha256``, ``findings``, ``bootstrap`` and ``comparisons``: per
        other evaluation, ``eval`` and for each finding (and ``mean``, the macro mean over findings with a
        defined AUC) ``auc_reference``, ``auc``, ``difference`` (auc - auc_reference), ``difference_ci``
        (paired bootstrap 95%), and for findings ``z`` and ``p_value`` of DeLong's test. None where undefined.
    """
    if len(eval_dirs) < 2:
        raise InputError("compare needs at least two evaluation folders; the first is the reference")
    if n_bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more, got {n_bootstrap}")
    reference, *others = [_load_scored(Path(d)) for d in eval_dirs]
    for other in others:
        _check_same_images(reference, other)
    y, base = _matrices(reference.labels, reference.predictions)
    comparisons = []
    for other in others:
        in_reference_order = align(reference.labels, other.predictions, str(reference.folder), str(other.folder))
        _, scores = _matrices(reference.labels, in_reference_order)
        comparisons.append({"eval": str(other.folder), **_compare_scores(y, base, scores, n_bootstrap, seed)})
    return {
        "reference": str(reference.folder),
        "n_images": len(y),
        "labels_sha256": reference.labels_sha256,
        "findings": list(FINDINGS),
        "bootstrap": {"n_resamples": n_bootstrap, "seed": seed, "method": "paired percentile interval over images"},
        "comparisons": comparisons,
    }


def _compare_scores(y: np.ndarray, base: np.ndarray, scores: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Per finding and macro mean: the AUCs of ``base`` and ``scores``, their difference, interval and DeLong test."""
    differences = metrics.bootstrap_auc_difference(y, scores, base, n_bootstrap, seed) if n_bootstrap else None
    findings: dict[str, dict[str, Any]] = {}
    for j, finding in enumerate(FINDINGS):
        test = metrics.delong_test(y[:, j], scores[:, j], base[:, j])
        if test is None:
            findings[finding] = dict.fromkeys(("auc_reference", "auc", "difference", "difference_ci", "z", "p_value"))
            continue
        findings[finding] = {
            "auc_reference": test.auc_b,
            "auc": test.auc_a,
            "difference": test.difference,
            "difference_ci": None if differences is None else _interval(differences[:, j]),
            "z": test.z,
            "p_value": test.p_value,
        }
    defined = [j for j, finding in enumerate(FINDINGS) if findings[finding]["auc"] is not None]
    mean = dict.fromkeys(("auc_reference", "auc", "difference", "difference_ci"))
    if defined:
        mean["auc_reference"] = float(np.mean([findings[FINDINGS[j]]["auc_reference"] for j in defined]))
        mean["auc"] = float(np.mean([findings[FINDINGS[j]]["auc"] for j in defined]))
        mean["difference"] = mean["auc"] - mean["auc_reference"]
        if differences is not None:
            mean["difference_ci"] = _interval(metrics.macro_mean(differences))
    return {"findings": findings, "mean": {**mean, "n_findings": len(defined)}}


def comparison_frame(result: Mapping[str, Any]) -> pd.DataFrame:
    """`compare`'s result as one row per (evaluation, finding), the macro mean last as finding ``mean``."""
    rows = []
    for comparison in result["comparisons"]:
        for finding, row in [*comparison["findings"].items(), ("mean", comparison["mean"])]:
            low, high = row["difference_ci"] or (None, None)
            rows.append(
                {
                    "eval": comparison["eval"],
                    "finding": finding,
                    "auc_reference": row["auc_reference"],
                    "auc": row["auc"],
                    "difference": row["difference"],
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": row.get("p_value"),
                }
            )
    return pd.DataFrame(rows)


def format_comparison(result: Mapping[str, Any]) -> str:
    """A plain-text table per compared evaluation: AUCs, difference, its interval and DeLong's p."""
    lines = [f"reference: {result['reference']} ({result['n_images']} images)"]
    for comparison in result["comparisons"]:
        lines += [
            "",
            f"{comparison['eval']} versus the reference (difference = it - reference)",
            f"{'finding':<20} {'ref AUC':>7} {'AUC':>7} {'diff':>7}  {'95% CI (bootstrap)':<18} {'DeLong p':>8}",
        ]
        for finding, row in [*comparison["findings"].items(), ("mean", comparison["mean"])]:
            p_value = row.get("p_value")
            lines.append(
                f"{finding:<20} {_num(row['auc_reference']):>7} {_num(row['auc']):>7} "
                f"{_num(row['difference'], signed=True):>7}  {_ci(row['difference_ci'], signed=True):<18} "
                f"{'-' if p_value is None else f'{p_value:.3g}':>8}"
            )
    return "\n".join(lines)


def compare_from_args(args: argparse.Namespace) -> int:
    """`python -m pipeline compare`: print the comparison as a table, or as JSON with ``--json``."""
    result = compare(args.evals, n_bootstrap=args.bootstrap, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else format_comparison(result))
    return 0


class _Scored(NamedTuple):
    folder: Path
    labels_sha256: str | None
    labels: pd.DataFrame
    predictions: pd.DataFrame


def _load_scored(folder: Path) -> _Scored:
    """An evaluation folder's labels_sha256, labels and predictions."""
    summary = load_eval(folder)["metrics"]
    for name in (PREDICTIONS, LABELS):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: {name} is missing; run the evaluation again")
    labels = data.load_labels(folder / LABELS)
    predictions = align(labels, read_predictions(folder / PREDICTIONS), f"{folder}/{LABELS}", f"{folder}/{PREDICTIONS}")
    return _Scored(folder, summary.get("labels_sha256"), labels, predictions)


def _check_same_images(reference: _Scored, other: _Scored) -> None:
    if other.labels_sha256 != reference.labels_sha256:
        raise InputError(
            f"{other.folder} and {reference.folder} were scored against different label files (labels_sha256 "
            f"{str(other.labels_sha256)[:12]} vs {str(reference.labels_sha256)[:12]}); "
            "compare only evaluations of the same labelled images"
        )
    ours, theirs = pd.Index(reference.labels["Image"]), pd.Index(other.labels["Image"])
    only_reference, only_other = ours.difference(theirs, sort=False), theirs.difference(ours, sort=False)
    if len(only_reference) or len(only_other):
        raise InputError(
            f"{other.folder} and {reference.folder} were evaluated on different images ({len(only_other)} only in "
            f"{other.folder.name}, {len(only_reference)} only in {reference.folder.name}, e.g. "
            f"{_first([*only_other, *only_reference])}); compare only evaluations of the same images"
        )


# --- small helpers ---------------------------------------------------------------------------------------------


def _matrices(labels: pd.DataFrame, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n, 14) labels and probabilities of aligned tables (see `align`)."""
    return labels[list(FINDINGS)].to_numpy(dtype=np.int8), predictions[list(FINDINGS)].to_numpy(dtype=np.float64)


def _missing_class(y: np.ndarray) -> str:
    return "no positive image" if not y.any() else "no negative image"


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _interval(samples: np.ndarray) -> list[float] | None:
    interval = metrics.percentile_interval(samples)
    return None if interval is None else list(interval)


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _first(items: Sequence[Any] | pd.Index) -> str:
    items = list(items)
    return ", ".join(str(item) for item in items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(interval: Sequence[float] | None, signed: bool = False) -> str:
    return "-" if interval is None else f"[{_num(interval[0], signed)}, {_num(interval[1], signed)}]"
