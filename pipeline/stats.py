"""Dataset statistics of a canonical label table: counts, prevalence, co-occurrence, demographics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data import label_matrix
from pipeline.findings import FINDINGS

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
