"""The `evaluate` and `compare` commands: flags, the printed tables, and the calls into the library."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.evaluation.results import (
    CALIBRATION_CSV,
    CONFORMAL_JSON,
    LABELS_CSV,
    METRICS_JSON,
    PR_CSV,
    PREDICTIONS_CSV,
    RISK_COVERAGE_CSV,
    ROC_CSV,
    Conformal,
    Realised,
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
    add_conformal_arguments(p)
    p.set_defaults(func=run_evaluate)

    p = commands.add_parser("compare", help="compare evaluations on the same images (DeLong, bootstrap)")
    p.add_argument("evals", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
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
        warn=warn,
        miss_rate=args.miss_rate,
        false_alarm_rate=args.false_alarm_rate,
    )
    written = [PREDICTIONS_CSV, LABELS_CSV, METRICS_JSON, ROC_CSV, PR_CSV, CALIBRATION_CSV]
    if evaluation.conformal is not None:
        written += [CONFORMAL_JSON, RISK_COVERAGE_CSV]
    if args.plots:
        from pipeline.plots import EVALUATION_PLOTS, write_evaluation_plots

        write_evaluation_plots(evaluation, args.out)
        written += list(EVALUATION_PLOTS)
        if evaluation.conformal is not None:
            from pipeline.plots import CONFORMAL_PLOT, write_conformal_plot

            write_conformal_plot(evaluation.conformal, evaluation.risk_coverage, args.out)
            written.append(CONFORMAL_PLOT)
    print(format_metrics(evaluation.summary))
    if evaluation.conformal is not None:
        print(format_conformal(evaluation.conformal))
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


# --- conformal guarantees (issue 19) -----------------------------------------------------------------------------


def add_conformal_arguments(p: argparse.ArgumentParser) -> None:
    """``--miss-rate`` and ``--false-alarm-rate`` of `evaluate`."""
    p.add_argument("--miss-rate", type=float, metavar="ALPHA",
                   help="conformal thresholds on the validation data: a new positive is ruled out with "
                        "probability at most ALPHA (writes conformal.json; see docs/conformal.md)")
    p.add_argument("--false-alarm-rate", type=float, metavar="BETA",
                   help="with --miss-rate: a new negative is flagged with probability at most BETA (default ALPHA)")


def format_conformal(conformal: Conformal) -> str:
    """The conformal thresholds per finding next to the rates they realised on the evaluated images."""
    lines = [
        "",
        f"conformal thresholds (miss rate {conformal.miss_rate:g}, false-alarm rate {conformal.false_alarm_rate:g}), "
        f"calibrated on {conformal.calibration} ({conformal.calibration_images} images), "
        f"checked on {conformal.test}; valid only for images like the calibration images",
        f"{'finding':<20} {'pos':>4} {'rule out <':>10} {'promised':>8}  {'miss here [95% CI]':<28}"
        f"{'neg':>4} {'flag >':>7} {'promised':>8}  {'false alarms here [95% CI]'}",
    ]
    for finding, g in conformal.findings.items():
        miss = ("too few positives" if g.miss_threshold is None
                else f"{g.miss_threshold:10.3f} {g.miss_bound:8.3f}  {_realised(g.test_misses):<28}")
        alarm = ("too few negatives" if g.false_alarm_threshold is None
                 else f"{g.false_alarm_threshold:7.3f} {g.false_alarm_bound:8.3f}  {_realised(g.test_false_alarms)}")
        lines.append(f"{finding:<20} {g.n_positive:>4} {miss:<49}{g.n_negative:>4} {alarm}")
    image = conformal.image
    if image.threshold is None:
        lines.append(f"image level: {image.note}")
    else:
        lines.append(
            f"image level: findings scoring >= {image.threshold:.3f} stay in the set (calibrated on {image.n_images} "
            f"images with a finding); share of a test image's findings missed: "
            f"{_num(image.test_missed_share)} {_ci(image.test_missed_share_ci)} over {image.test_n_images} images, "
            f"promised <= {conformal.miss_rate:g}; mean set size {_num(image.test_mean_set_size)} findings"
        )
    return "\n".join(lines)


def _realised(rate: Realised | None) -> str:
    if rate is None or rate.rate is None:
        return "no test images"
    return f"{rate.rate:.3f} {_ci(rate.ci)} ({rate.count}/{rate.n})"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ci(interval: Sequence[float] | None, signed: bool = False) -> str:
    return "-" if interval is None else f"[{_num(interval[0], signed)}, {_num(interval[1], signed)}]"
