"""The `evaluate` and `compare` commands: flags, the printed tables, and the calls into the library."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.text import count
from pipeline.evaluation.results import (
    CALIBRATION_CSV,
    LABELS_CSV,
    METRICS_JSON,
    PR_CSV,
    PREDICTIONS_CSV,
    ROC_CSV,
    Summary,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `evaluate` and `compare` to the top-level parser."""
    p = commands.add_parser("evaluate", help="per-finding AUC with CIs, thresholds, calibration")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a .keras file, or a run folder with best.keras")
    source.add_argument("--predictions", type=Path, help="CSV with Image and one probability column per finding")
    p.add_argument("--labels", required=True, type=Path, help="label file (or prepared folder) of the images to score")
    p.add_argument("--images", type=Path, help="image folder (with --checkpoint)")
    p.add_argument("--out", required=True, type=Path, help="evaluation folder to write (metrics.json, curves)")
    thresholds = p.add_mutually_exclusive_group()
    thresholds.add_argument(
        "--valid-predictions", type=Path, help="an evaluation folder of the validation set: thresholds by Youden's J"
    )
    thresholds.add_argument(
        "--valid-labels", type=Path, help="validation labels: predict them too, thresholds by Youden's J (--checkpoint)"
    )
    thresholds.add_argument("--thresholds", type=Path, help="JSON {finding: threshold}")
    p.add_argument(
        "--target-sensitivity", type=float, metavar="F", help="thresholds reaching this sensitivity on validation"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the images for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--plots", action="store_true",
        help="also write curves.html: ROC, PR and calibration on one page (works offline and copied alone)",
    )
    p.set_defaults(func=run_evaluate)

    p = commands.add_parser("compare", help="compare evaluations on the same images (DeLong, bootstrap)")
    p.add_argument("evals", nargs="+", type=Path, metavar="EVAL",
                   help="two or more evaluation folders of the same images; the first is the reference")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired resamples for the 95%% intervals; 0: none")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=run_compare)


def run_evaluate(args: argparse.Namespace) -> int:
    """Predictions (from a checkpoint or a CSV) and labels in, an evaluation folder out, its table printed."""
    from pipeline.cli import localization, warn
    from pipeline.evaluation import evaluate

    if args.reference is not None:
        return localization.run_reference(args)
    evaluation = evaluate.evaluate_files(
        args.labels,
        args.out,
        checkpoint=args.checkpoint,
        images=args.images,
        predictions_file=args.predictions,
        valid_predictions=args.valid_predictions,
        valid_labels=args.valid_labels,
        thresholds_file=args.thresholds,
        target_sensitivity=args.target_sensitivity,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        plots=args.plots,
        warn=warn,
    )
    print(format_metrics(evaluation.summary))
    written = [PREDICTIONS_CSV, LABELS_CSV, METRICS_JSON, ROC_CSV, PR_CSV, CALIBRATION_CSV]
    if args.plots:
        from pipeline.plots import EVALUATION_PLOTS

        written += list(EVALUATION_PLOTS)
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison as a table, or as JSON with ``--json``."""
    from pipeline.evaluation import compare

    result = compare.compare(args.evals, n_bootstrap=args.bootstrap, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else format_comparison(result))
    return 0


def format_metrics(summary: Summary) -> str:
    """A plain-text table of an evaluation: AUC with interval, AP, and the operating point per finding."""
    lines = [
        f"{count(summary.n_images, 'image')}, thresholds: {summary.threshold_key}",
        f"{'finding':<20} {'AUC':>6}  {'95% CI':<15} {'AP':>6} {'thresh':>7} {'sens':>6} {'spec':>6} {'PPV':>6}",
    ]
    for finding in summary.findings:
        point = summary.at_threshold[finding]
        lines.append(
            f"{finding:<20} {_num(summary.auc[finding]):>6}  {_ci(summary.auc_ci[finding]):<15} "
            f"{_num(summary.average_precision[finding]):>6} {summary.thresholds[finding]:>7.3f} "
            f"{_num(point.sensitivity):>6} {_num(point.specificity):>6} {_num(point.ppv):>6}"
        )
    lines.append(f"{'mean':<20} {_num(summary.mean_auc):>6}  {_ci(summary.mean_auc_ci)}")
    return "\n".join(lines)


def format_comparison(result: Mapping[str, Any]) -> str:
    """A plain-text table per compared evaluation: AUCs, difference, its interval and DeLong's p."""
    lines = [f"reference: {result['reference']} ({count(result['n_images'], 'image')})"]
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
        lines += _why_no_p_value(comparison)
    return "\n".join(lines)


def _why_no_p_value(comparison: Mapping[str, Any]) -> list[str]:
    """Lines saying why a DeLong p-value is shown as "-": the mean has no test, a finding may lack cases."""
    undefined = [f for f, row in comparison["findings"].items() if row["auc"] is None]
    too_few = [f for f, row in comparison["findings"].items() if row["auc"] is not None and row["p_value"] is None]
    lines = ["DeLong p '-': mean: the test is per finding (read the mean's bootstrap interval instead)"]
    if undefined:
        lines.append(f"  {', '.join(undefined)}: AUC undefined, the images hold no positive or no negative case")
    if too_few:
        lines.append(f"  {', '.join(too_few)}: fewer than 2 positive or 2 negative images, too few for the test")
    return lines


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(interval: Sequence[float] | None, signed: bool = False) -> str:
    return "-" if interval is None else f"[{_num(interval[0], signed)}, {_num(interval[1], signed)}]"
