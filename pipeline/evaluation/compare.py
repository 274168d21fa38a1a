"""Compare evaluations of the same images: per finding and on the mean, AUC differences with DeLong's test.

Each evaluation folder is read through `pipeline.evaluation.results`; the first is the reference. Differences get a
paired bootstrap interval (both models scored on the same resampled images) and, per finding, DeLong's
two-sided test. `comparison_frame` lays the result out as a table for pages and notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import metrics
from pipeline.evaluation.bootstrap import check_bootstrap
from pipeline.evaluation.evaluate import interval, matrices
from pipeline.evaluation.results import align, read_metrics, read_scored


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
        ``subgroup_gaps``: whether the subgroup gaps differ (`subgroup_gaps`), None when the reference has no
        subgroup audit.
    """
    if len(eval_dirs) < 2:
        raise InputError("compare needs at least two evaluation folders; the first is the reference")
    check_bootstrap(n_bootstrap)
    reference, *others = [_load_scored(Path(d)) for d in eval_dirs]
    for other in others:
        _check_same_images(reference, other)
    y, base = matrices(reference.labels, reference.predictions)
    comparisons = []
    for other in others:
        in_reference_order = align(reference.labels, other.predictions, str(reference.folder), str(other.folder))
        _, scores = matrices(reference.labels, in_reference_order)
        comparisons.append({"eval": str(other.folder), **_compare_scores(y, base, scores, n_bootstrap, seed),
                            "subgroup_gaps": subgroup_gaps(reference, other, in_reference_order, n_bootstrap, seed)})
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
            "difference_ci": None if differences is None else interval(differences[:, j]),
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
            mean["difference_ci"] = interval(metrics.macro_mean(differences))
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


class _Scored(NamedTuple):
    folder: Path
    labels_sha256: str | None
    labels: pd.DataFrame
    predictions: pd.DataFrame


def _load_scored(folder: Path) -> _Scored:
    """An evaluation folder's labels_sha256, labels and predictions."""
    summary = read_metrics(folder)
    labels, predictions = read_scored(folder)
    return _Scored(folder, summary.labels_sha256, labels, predictions)


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
            f"{first_items([*only_other, *only_reference])}); compare only evaluations of the same images"
        )


# --- subgroups (issue 18) ----------------------------------------------------------------------------------------


def subgroup_gaps(reference: _Scored, other: _Scored, other_predictions: pd.DataFrame, n_bootstrap: int,
                  seed: int) -> list[dict[str, Any]] | None:
    """`pipeline.evaluation.subgroups.gap_differences` of two evaluations, with the reference's audit settings
    and its subgroup_metadata.csv; None when the reference has no subgroup audit."""
    from pipeline.evaluation import subgroups
    from pipeline.evaluation.results import read_subgroup_metadata, read_subgroups

    audit, meta = read_subgroups(reference.folder), read_subgroup_metadata(reference.folder)
    if audit is None or meta is None:
        return None
    meta = meta.set_index("Image").reindex(reference.labels["Image"]).reset_index()
    return subgroups.gap_differences(
        reference.labels, meta, (reference.predictions, read_metrics(reference.folder).thresholds),
        (other_predictions, read_metrics(other.folder).thresholds), age_edges=audit.age_edges,
        min_count=audit.min_count, n_bootstrap=n_bootstrap, seed=seed)
