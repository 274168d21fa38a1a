"""Scoring against expert labels: the Google 2019 radiologist-adjudicated labels of 4 findings on NIH images.

Majkowska et al. (Radiology 2019) had NIH images re-read by radiologists and adjudicated. The shipped file,
``google2019_nih-chest-xray-labels.csv.gz``, holds one row per image (4,376 images of the official
test and validation sets, column ``Set Id``): the NIH metadata columns, then ``Fracture``,
``Pneumothorax``, ``Airspace opacity`` and ``Nodule or mass``, each ``YES`` or ``NO``. These are the
adjudicated labels only (no per-reader columns). The file's ``Finding Labels`` (NIH's text-mined labels)
is not used: NIH labels come from the label file the caller gives, so both label sets score the same images.

Mapping to the 14 NIH findings (a model's score for a group is the largest of its findings' probabilities,
and its NIH label is positive when any of its findings is):

- ``Pneumothorax`` -> Pneumothorax
- ``Nodule or mass`` -> max(Nodule, Mass)
- ``Airspace opacity`` -> max(Consolidation, Pneumonia, Infiltration)
- ``Fracture``: no NIH finding; skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files
from pipeline.evaluation import metrics

GOOGLE2019 = paths.expert_labels_file()
REFERENCES = {"google2019": GOOGLE2019}  # names accepted by `evaluate --reference`
MAPPING: dict[str, tuple[str, ...]] = {
    "Pneumothorax": ("Pneumothorax",),
    "Nodule or mass": ("Nodule", "Mass"),
    "Airspace opacity": ("Consolidation", "Pneumonia", "Infiltration"),
}
SKIPPED = ("Fracture",)  # expert findings without an NIH counterpart
RESULT = "reference.json"
PER_IMAGE = "reference-images.csv"
_VALUES = {"YES": 1, "NO": 0}


def reference_file(name_or_path: str | os.PathLike[str]) -> Path:
    """The file of a named reference (``google2019``) or a path to one in the same format."""
    return REFERENCES.get(str(name_or_path), Path(name_or_path))


def load_expert_labels(path: str | os.PathLike[str] = GOOGLE2019) -> pd.DataFrame:
    """``Image`` and one 0/1 column per expert finding of `MAPPING`, from the Google 2019 file (plain or .gz).

    Raises
    ------
    InputError
        Missing file or column, a repeated image, or a value other than YES / NO.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: expert label file not found; give the Google 2019 labels CSV or 'google2019'")
    raw = label_files.read_csv(path)
    missing = [c for c in ("Image Index", *MAPPING) if c not in raw.columns]
    if missing:
        raise InputError(f"{path.name}: missing column {missing[0]!r}; expected the Google 2019 expert labels "
                         f"(Image Index, {', '.join(MAPPING)})")
    table = pd.DataFrame({"Image": raw["Image Index"].astype(str).str.strip()})
    for finding in MAPPING:
        values = raw[finding].astype(str).str.strip().str.upper().map(_VALUES)
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise InputError(f"{path.name}: column {finding!r} row {row + 2} has {raw[finding].iloc[row]!r}; "
                             "expected YES or NO")
        table[finding] = values.astype(int).to_numpy()
    repeated = table["Image"][table["Image"].duplicated()]
    if len(repeated):
        raise InputError(f"{path.name}: image {repeated.iloc[0]!r} has more than one row; keep one per image")
    return table


def group_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``Image`` and, per expert finding, the largest of its NIH findings' columns (labels or probabilities)."""
    grouped = pd.DataFrame({"Image": table["Image"].to_numpy()})
    for finding, nih in MAPPING.items():
        grouped[finding] = table[list(nih)].max(axis=1).to_numpy()
    return grouped


def with_expert_labels(labels: pd.DataFrame, expert: pd.DataFrame) -> pd.DataFrame:
    """The rows of a canonical label table whose images have expert labels, in the label table's order."""
    return labels[labels["Image"].isin(set(expert["Image"]))].reset_index(drop=True)


def score(labels: pd.DataFrame, predictions: pd.DataFrame, expert: pd.DataFrame, n_bootstrap: int = 1000,
          seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """AUCs against the expert labels next to AUCs against the NIH labels, on the same images.

    Parameters
    ----------
    labels
        Canonical NIH label table (`pipeline.data.label_files.load_labels`).
    predictions
        ``Image`` and the 14 probabilities.
    expert
        `load_expert_labels`.

    Returns
    -------
    summary, per_image
        ``summary`` per expert finding: positives under each label set, AUC with its bootstrap 95% interval
        (paired resamples of images) against each, and the agreement table of NIH against expert labels;
        ``per_image``: the image, both label sets and the group score.
    """
    refereed = set(labels["Image"]) & set(expert["Image"])
    if not refereed:
        raise InputError(f"none of the {len(labels):,} labelled images has an expert label; the Google 2019 labels "
                         "cover 4,376 images of the official test and validation lists")
    images = sorted(refereed & set(predictions["Image"]))
    if not images:
        raise InputError(f"none of the {len(refereed):,} labelled images with an expert label has a prediction; "
                         "predict the images of the label file")
    notes = [f"{len(refereed) - len(images)} labelled images with expert labels have no prediction and are left out"] \
        if len(images) < len(refereed) else []
    nih = group_columns(labels.set_index("Image").loc[images].reset_index())
    scores = group_columns(predictions.set_index("Image").loc[images, list(FINDINGS)].reset_index())
    experts = expert.set_index("Image").loc[images].reset_index()
    names = list(MAPPING)
    y_expert, y_nih = experts[names].to_numpy(int), nih[names].to_numpy(int)
    s = scores[names].to_numpy(float)
    resampled = metrics.bootstrap_auc(np.hstack([y_expert, y_nih]), np.hstack([s, s]), n_bootstrap, seed) \
        if n_bootstrap else np.full((0, 2 * len(names)), np.nan)
    findings = {}
    for j, finding in enumerate(names):
        entry: dict[str, Any] = {"nih_findings": list(MAPPING[finding])}
        for k, (source, y) in enumerate((("expert", y_expert[:, j]), ("nih", y_nih[:, j]))):
            auc = metrics.roc_auc(y, s[:, j])
            interval = metrics.percentile_interval(resampled[:, k * len(names) + j]) if auc is not None else None
            entry[source] = {"positives": int(y.sum()), "auc": auc, "auc_ci": list(interval) if interval else None}
            if auc is None:
                lacking = "positive" if y.sum() == 0 else "negative"
                notes.append(f"{finding}: no {lacking} among the {len(images)} images under the {source} labels; "
                             "AUC undefined")
        entry["agreement"] = agreement(y_nih[:, j], y_expert[:, j])
        findings[finding] = entry
    summary = {
        "reference": "Google 2019 radiologist-adjudicated labels (Majkowska et al., Radiology 2019)",
        "n_images": len(images),
        "mapping": {finding: " / ".join(nih) for finding, nih in MAPPING.items()},
        "skipped_findings": list(SKIPPED),
        "score": "a group's score is the largest probability of its NIH findings; its NIH label is their OR",
        "bootstrap": {"n_resamples": n_bootstrap, "seed": seed, "method": "percentile, paired resamples of images"},
        "findings": findings,
        "notes": notes,
    }
    per_image = pd.DataFrame({"Image": images})
    for j, finding in enumerate(names):
        per_image[f"{finding} expert"] = y_expert[:, j]
        per_image[f"{finding} NIH"] = y_nih[:, j]
        per_image[f"{finding} score"] = s[:, j]
    return summary, per_image


def evaluate_reference(
    labels_file: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    predictions_file: str | os.PathLike[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What ``evaluate --reference`` does: `score` a checkpoint's (or a CSV's) predictions of the labelled images
    that have expert labels, and write reference.json and reference-images.csv to ``out``.

    ``reference`` is ``google2019`` or a CSV in its format (`reference_file`). Returns the summary as written,
    with where its inputs came from.
    """
    from pipeline.core.files import sha256_of, write_csv_atomic, write_json_atomic
    from pipeline.evaluation import bootstrap, results

    if (checkpoint is None) == (predictions_file is None):
        raise InputError("give one of `checkpoint` (a model to run) or `predictions_file` (its predictions)")
    if checkpoint is not None and images is None:
        raise InputError("`checkpoint` needs `images`, the folder holding the labelled images")
    bootstrap.check_bootstrap(n_bootstrap)
    path = reference_file(reference)
    expert = load_expert_labels(path)
    labels = with_expert_labels(label_files.load_labels(labels_file), expert)
    if labels.empty:
        raise InputError(f"{Path(labels_file).name}: none of its images has an expert label in {path.name}; "
                         "the Google 2019 labels cover 4,376 images of the official test and validation lists")
    skipped: dict[str, str] = {}
    if checkpoint is not None:
        from pipeline.inference import predict
        from pipeline.networks import densenet

        label_files.check_images_exist(labels, images, Path(labels_file).name)
        predictions, skipped = predict.predict_table(densenet.load(checkpoint), labels, images)
    else:
        predictions = results.read_predictions(predictions_file)
    summary, per_image = score(labels, predictions, expert, n_bootstrap, seed)
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "predictions_file": str(predictions_file) if predictions_file is not None else None,
        "labels_file": str(labels_file),
        "labels_sha256": sha256_of(labels_file),
        "reference_file": str(_relative(path)),
        "reference_sha256": sha256_of(path),
        **({"skipped_images": skipped} if skipped else {}),
        **summary,
    }
    write_csv_atomic(per_image, Path(out) / PER_IMAGE)
    write_json_atomic(summary, Path(out) / RESULT)
    return summary


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it, as the result records it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def agreement(nih: np.ndarray, expert: np.ndarray) -> dict[str, Any]:
    """Counts of the four NIH / expert combinations and the share of images where the two disagree."""
    nih, expert = np.asarray(nih, bool), np.asarray(expert, bool)
    counts = {
        "both_positive": int((nih & expert).sum()),
        "nih_only": int((nih & ~expert).sum()),
        "expert_only": int((~nih & expert).sum()),
        "both_negative": int((~nih & ~expert).sum()),
    }
    counts["disagree_share"] = float((nih != expert).mean()) if nih.size else None
    return counts


def agreement_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per expert finding: the agreement counts and the disagreeing share."""
    return pd.DataFrame([{"finding": finding, **entry["agreement"]} for finding, entry in summary["findings"].items()])


def format_summary(summary: Mapping[str, Any]) -> str:
    """Plain-text tables: AUC against expert and NIH labels, then how often the two label sets disagree."""
    lines = [f"{summary['n_images']} images with expert labels ({summary['reference']})",
             f"{'finding':<18} {'NIH findings':<38} {'pos exp/NIH':>11}  {'AUC expert':<22} {'AUC NIH':<22}"]
    for finding, entry in summary["findings"].items():
        positives = f"{entry['expert']['positives']}/{entry['nih']['positives']}"
        lines.append(f"{finding:<18} {' / '.join(entry['nih_findings']):<38} {positives:>11}  "
                     f"{_auc(entry['expert']):<22} {_auc(entry['nih']):<22}")
    lines.append(f"{'finding':<18} {'both +':>7} {'NIH only':>9} {'expert only':>12} {'both -':>7} {'disagree':>9}")
    for row in agreement_frame(summary).itertuples(index=False):
        share = "n/a" if row.disagree_share is None else f"{row.disagree_share:.1%}"
        lines.append(f"{row.finding:<18} {row.both_positive:>7} {row.nih_only:>9} {row.expert_only:>12} "
                     f"{row.both_negative:>7} {share:>9}")
    lines += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def _auc(entry: Mapping[str, Any]) -> str:
    if entry["auc"] is None:
        return "undefined"
    ci = entry["auc_ci"]
    return f"{entry['auc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
