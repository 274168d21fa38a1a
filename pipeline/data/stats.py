"""Dataset statistics of a canonical label table: counts, prevalence, co-occurrence, demographics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS, NO_FINDING
from pipeline.data.label_files import class_weights, compute_class_freqs, label_matrix

AGE_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 200)
AGE_LABELS = [f"{lo}-{hi - 1}" for lo, hi in zip(AGE_BINS[:-1], AGE_BINS[1:], strict=True)]


def summarize(table: pd.DataFrame) -> dict:
    """Everything the `stats` command and the dashboard's Dataset page show, as JSON-ready values.

    Keys: ``n_images``, ``n_patients``, ``images_per_patient`` (mean, median, max and a histogram),
    ``prevalence`` (count and percent per finding), ``no_finding`` (count and percent),
    ``findings_per_image`` (histogram), ``cooccurrence`` (14 x 14 counts; the diagonal is the count),
    and ``age``, ``sex``, ``view`` where the table has those columns.
    """
    labels = label_matrix(table).astype(np.int64)
    n = len(table)
    per_patient = table.groupby("PatientId").size()
    per_image = labels.sum(axis=1)
    counts = labels.sum(axis=0)
    percent = 100.0 * counts / n if n else np.zeros(len(FINDINGS))
    no_finding = int((per_image == 0).sum())
    summary: dict = {
        "n_images": n,
        "n_patients": int(per_patient.size),
        "images_per_patient": {
            "mean": float(per_patient.mean()) if n else 0.0,
            "median": float(per_patient.median()) if n else 0.0,
            "max": int(per_patient.max()) if n else 0,
            "histogram": _histogram(per_patient.to_numpy()),
        },
        "prevalence": {
            f: {"count": int(c), "percent": float(p)} for f, c, p in zip(FINDINGS, counts, percent, strict=True)
        },
        "no_finding": {"count": no_finding, "percent": 100.0 * no_finding / n if n else 0.0},
        "findings_per_image": _histogram(per_image),
        "cooccurrence": (labels.T @ labels).tolist(),
    }
    if "Age" in table.columns:
        ages = pd.to_numeric(table["Age"], errors="coerce").dropna()
        binned = pd.cut(ages, bins=AGE_BINS, right=False, labels=AGE_LABELS)
        summary["age"] = {
            "mean": float(ages.mean()) if len(ages) else None,
            "median": float(ages.median()) if len(ages) else None,
            "min": float(ages.min()) if len(ages) else None,
            "max": float(ages.max()) if len(ages) else None,
            "bins": {str(k): int(v) for k, v in binned.value_counts(sort=False).items()},
        }
    for column, key in (("Sex", "sex"), ("View", "view")):
        if column in table.columns:
            summary[key] = {str(k): int(v) for k, v in table[column].fillna("unknown").value_counts().items()}
    return summary


def _histogram(values: np.ndarray) -> dict[str, int]:
    """Counts of each integer value, as a JSON-friendly ``{"value": count}`` in ascending order."""
    if len(values) == 0:
        return {}
    counts = np.bincount(np.asarray(values, dtype=np.int64))
    return {str(v): int(c) for v, c in enumerate(counts) if c}


def format_summary(summary: dict) -> str:
    """The summary as a readable plain-text report."""
    n = summary["n_images"]
    ipp = summary["images_per_patient"]
    lines = [
        f"images: {n:,}   patients: {summary['n_patients']:,}   "
        f"images per patient: mean {ipp['mean']:.2f}, median {ipp['median']:.0f}, max {ipp['max']}",
        f"No Finding: {summary['no_finding']['count']:,} ({summary['no_finding']['percent']:.1f}%)",
        "",
        f"{'finding':<20}{'images':>9}{'%':>8}",
    ]
    by_count = sorted(summary["prevalence"].items(), key=lambda item: -item[1]["count"])
    lines += [f"{f:<20}{p['count']:>9,}{p['percent']:>7.1f}%" for f, p in by_count]
    lines += ["", "findings per image: " + ", ".join(f"{k}: {v:,}" for k, v in summary["findings_per_image"].items())]
    if "age" in summary and summary["age"]["mean"] is not None:
        age = summary["age"]
        lines.append(
            f"age: mean {age['mean']:.1f}, median {age['median']:.0f}, range {age['min']:.0f}-{age['max']:.0f}"
        )
    for key in ("sex", "view"):
        if key in summary:
            lines.append(f"{key}: " + ", ".join(f"{k} {v:,}" for k, v in summary[key].items()))
    matrix = np.array(summary["cooccurrence"])
    np.fill_diagonal(matrix, 0)
    i, j = np.unravel_index(np.argmax(matrix), matrix.shape)
    if matrix[i, j]:
        lines.append(f"most frequent pair: {FINDINGS[i]} + {FINDINGS[j]} ({matrix[i, j]:,} images; --json for all)")
    return "\n".join(lines)


def filter_table(
    table: pd.DataFrame,
    findings: list[str] | None = None,
    views: list[str] | None = None,
    sexes: list[str] | None = None,
    age_range: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """The rows matching every given filter; None or an empty list leaves that filter off.

    ``findings`` keeps images positive for any of them ("No Finding" keeps images without any finding);
    ``views`` and ``sexes`` match the ``View`` and ``Sex`` columns; ``age_range`` is inclusive at both ends
    and drops rows without an age.
    """
    keep = np.ones(len(table), dtype=bool)
    if findings:
        unknown = [f for f in findings if f not in FINDINGS and f != NO_FINDING]
        if unknown:
            raise InputError(f"unknown finding {unknown[0]!r}; use the NIH names or {NO_FINDING!r}")
        chosen = [f for f in findings if f in FINDINGS]
        match = table[chosen].to_numpy().any(axis=1) if chosen else np.zeros(len(table), dtype=bool)
        if NO_FINDING in findings:
            match |= table[list(FINDINGS)].to_numpy().sum(axis=1) == 0
        keep &= match
    for column, values in (("View", views), ("Sex", sexes)):
        if values:
            keep &= _column(table, column).isin(values).to_numpy()
    if age_range is not None:
        ages = pd.to_numeric(_column(table, "Age"), errors="coerce")
        keep &= ages.between(age_range[0], age_range[1]).to_numpy()
    return table[keep].reset_index(drop=True)


def _column(table: pd.DataFrame, column: str) -> pd.Series:
    if column not in table.columns:
        raise InputError(f"this label file has no {column!r} column; filter by {column} needs the NIH metadata")
    return table[column]


def loss_contributions(table: pd.DataFrame) -> pd.DataFrame:
    """Each finding's share of the loss from positive and negative images, before and after class weighting.

    The course's definition: before weighting, positives contribute ``freq_pos`` and negatives ``freq_neg``;
    the weighted loss multiplies them by ``w_pos = freq_neg`` and ``w_neg = freq_pos``, so afterwards both
    contribute ``freq_pos * freq_neg`` and the imbalance is gone. Index: the 14 findings; columns
    ``freq_pos``, ``freq_neg``, ``pos_before``, ``neg_before``, ``pos_after``, ``neg_after``, ``w_pos``, ``w_neg``.
    """
    freq_pos, freq_neg = compute_class_freqs(table)
    w_pos, w_neg = class_weights(table)
    return pd.DataFrame(
        {
            "freq_pos": freq_pos,
            "freq_neg": freq_neg,
            "pos_before": freq_pos,
            "neg_before": freq_neg,
            "pos_after": freq_pos * w_pos,
            "neg_after": freq_neg * w_neg,
            "w_pos": w_pos,
            "w_neg": w_neg,
        },
        index=pd.Index(FINDINGS, name="finding"),
    )
