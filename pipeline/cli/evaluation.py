"""The `evaluate` and `compare` commands: flags, the printed tables, and the calls into the library."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError
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
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--predictions", type=Path, help="CSV with Image and one probability column per finding")
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--images", type=Path, help="image folder (with --checkpoint)")
    p.add_argument("--out", required=True, type=Path)
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
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--plots", action="store_true", help="also write roc.html, pr.html and calibration.html (work offline)"
    )
    p.add_argument(
        "--reference", metavar="NAME_OR_CSV",
        help="score against expert labels instead: 'google2019' (the shipped Google 2019 adjudicated labels) or "
             "a CSV in its format; only --labels images with expert labels are predicted",
    )
    p.set_defaults(func=run_evaluate)

    p = commands.add_parser("compare", help="compare evaluations on the same images (DeLong, bootstrap)")
    p.add_argument("evals", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_compare)


def run_evaluate(args: argparse.Namespace) -> int:
    """Predictions (from a checkpoint or a CSV) and labels in, an evaluation folder out, its table printed."""
    from pipeline.cli import warn
    from pipeline.evaluation import evaluate

    if args.reference is not None:
        return run_reference(args)
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
        warn=warn,
    )
    written = [PREDICTIONS_CSV, LABELS_CSV, METRICS_JSON, ROC_CSV, PR_CSV, CALIBRATION_CSV]
    if args.plots:
        from pipeline.plots import EVALUATION_PLOTS, write_evaluation_plots

        write_evaluation_plots(evaluation, args.out)
        written += list(EVALUATION_PLOTS)
    print(format_metrics(evaluation.summary))
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def run_reference(args: argparse.Namespace) -> int:
    """`evaluate --reference`: AUCs against expert and NIH labels on the same images; writes reference.json."""
    from pipeline.evaluation import expert_labels

    unused = [flag for flag, value in (("--valid-predictions", args.valid_predictions), ("--valid-labels",
              args.valid_labels), ("--thresholds", args.thresholds), ("--target-sensitivity", args.target_sensitivity),
              ("--plots", args.plots or None)) if value is not None]
    if unused:
        raise InputError(f"{unused[0]} has no part in --reference, which reports AUCs only; leave it out")
    summary = expert_labels.evaluate_reference(
        args.labels, args.reference, args.out, checkpoint=args.checkpoint, images=args.images,
        predictions_file=args.predictions, n_bootstrap=args.bootstrap, seed=args.seed,
    )
    print(expert_labels.format_summary(summary))
    print(f"wrote {expert_labels.RESULT} and {expert_labels.PER_IMAGE} to {args.out}")
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
        f"{summary.n_images} images, thresholds: {summary.threshold_key}",
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


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(interval: Sequence[float] | None, signed: bool = False) -> str:
    return "-" if interval is None else f"[{_num(interval[0], signed)}, {_num(interval[1], signed)}]"
