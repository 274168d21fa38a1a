"""The `evaluate` and `compare` commands: flags, the printed tables, and the calls into the library."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError
from pipeline.core.text import count
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
        help="also write curves.html (ROC, PR and calibration on one page) and the subgroup forest plots; they "
             "work offline and copied alone",
    )
    p.add_argument(
        "--reference", metavar="NAME_OR_CSV",
        help="score against expert labels instead: 'google2019' (the shipped Google 2019 adjudicated labels) or "
             "a CSV in its format; only --labels images with expert labels are predicted",
    )
    add_subgroup_flags(p)
    add_conformal_arguments(p)
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
        **subgroup_options(args),
        miss_rate=args.miss_rate,
        false_alarm_rate=args.false_alarm_rate,
    )
    written = [PREDICTIONS_CSV, LABELS_CSV, METRICS_JSON, ROC_CSV, PR_CSV, CALIBRATION_CSV]
    if evaluation.conformal is not None:
        written += [CONFORMAL_JSON, RISK_COVERAGE_CSV]
    if args.plots:
        from pipeline.plots import EVALUATION_PLOTS, write_evaluation_plots

        try:  # the evaluation folder is complete by now; a full disk costs only the figures
            write_evaluation_plots(evaluation, args.out)
            written += list(EVALUATION_PLOTS)
            if evaluation.conformal is not None:
                from pipeline.plots import CONFORMAL_PLOT, write_conformal_plot

                write_conformal_plot(evaluation.conformal, evaluation.risk_coverage, args.out)
                written.append(CONFORMAL_PLOT)
        except OSError as exc:
            raise InputError(f"{args.out}: the evaluation is written, but not its figures ({exc.strerror}); "
                             "free space and rerun with --plots") from None
    print(format_metrics(evaluation.summary))
    written += print_subgroups(args.out, args.plots)
    if evaluation.conformal is not None:
        print(format_conformal(evaluation.conformal))
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


# --- subgroups (issue 18) ---------------------------------------------------------------------------------------


def add_subgroup_flags(p: argparse.ArgumentParser) -> None:
    """The subgroup audit's flags of `evaluate`: on by default wherever the NIH metadata is there."""
    from pipeline.evaluation.subgroups import DEFAULT_AGE_EDGES, DEFAULT_MIN_COUNT

    p.add_argument("--no-subgroups", dest="subgroups", action="store_false",
                   help="leave out the subgroup audit (by sex, age, view; on whenever age, sex and view are known)")
    p.add_argument("--age-groups", type=_age_edges, default=DEFAULT_AGE_EDGES, metavar="EDGES",
                   help="age group boundaries in years (default 20,40,60,80: 0-20, 20-40, 40-60, 60-80, 80+)")
    p.add_argument("--subgroup-min", type=int, default=DEFAULT_MIN_COUNT, metavar="N",
                   help=f"fewest positives (or negatives) a subgroup number may rest on; fewer: 'too few' "
                        f"(default {DEFAULT_MIN_COUNT})")


def subgroup_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `evaluate_files` that the subgroup flags set."""
    return {"subgroups": args.subgroups, "age_edges": args.age_groups, "subgroup_min": args.subgroup_min}


def _age_edges(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole years separated by commas, e.g. 20,40,60,80") from None


def print_subgroups(out: Path, plots: bool) -> list[str]:
    """Print the audit an evaluation folder holds, if any; return the file names it added."""
    from pipeline.evaluation import results

    audit = results.read_subgroups(out)
    if audit is None:
        return []
    if plots:
        from pipeline.plots import write_subgroup_plots

        write_subgroup_plots(audit, out)
    print()
    print(format_subgroups(audit))
    written = [results.SUBGROUPS_JSON, results.SUBGROUPS_CSV, results.SUBGROUP_METADATA_CSV]
    if plots:
        from pipeline.plots import SUBGROUP_PLOTS

        written += list(SUBGROUP_PLOTS)
    return written


def format_subgroups(audit: Any) -> str:
    """Underdiagnosis and overdiagnosis per subgroup with intervals and gaps; notes; where the rest is."""
    from pipeline.evaluation.subgroups import REST_TOO_FEW

    lines = [
        f"subgroups of {audit.n_images} images; underdiagnosis: abnormal images the model calls normal "
        "(no finding at or above its threshold); overdiagnosis: normal images called abnormal; gap = group - rest",
        f"{'subgroup':<24} {'images':>6} {'abnormal':>8}  {'underdiagnosis':<22} {'gap':<24}  "
        f"{'overdiagnosis':<22} {'gap':<24}",
    ]
    for group in audit.groups:
        cells = []
        for rate in (group.underdiagnosis, group.overdiagnosis):
            if rate.value is None:
                cells += [f"too few ({rate.count})" if rate.too_few else "undefined", "-"]
                continue
            cells += [f"{_num(rate.value)} {_ci(rate.ci):<16}",
                      f"{_num(rate.gap, True)} {_ci(rate.gap_ci, True):<17}" if rate.gap is not None
                      else REST_TOO_FEW.format(audit.min_count)]
        lines.append(f"{group.attribute + ': ' + group.name:<24} {group.n_images:>6} {group.n_abnormal:>8}  "
                     f"{cells[0]:<22} {cells[1]:<24}  {cells[2]:<22} {cells[3]:<24}".rstrip())
    lines.append(f"too few (n): fewer than {audit.min_count} abnormal (or normal) images, no number given; per "
                 "finding AUC, sensitivity, false-positive rate and gaps with 95% intervals: subgroups.csv")
    lines += [f"note: {note}" for note in audit.notes]
    return "\n".join(lines)


def format_gap_differences(rows: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The lines of `compare` on subgroup gaps: how many were compared, and those whose difference excludes 0."""
    if rows is None:
        return ["subgroup gaps: the reference has no subgroup audit (evaluate it again with the NIH metadata there)"]
    differ = [row for row in rows if row["differ"]]
    lines = [f"subgroup gaps (group - rest) compared: {len(rows)}; differing (95% interval of the difference "
             f"excludes 0): {len(differ)}" + (f"; about {len(rows) * 0.05:.1f} expected by chance" if rows else "")]
    for row in differ:
        what = row["measure"] + ("" if row["finding"] == "any" else f" {row['finding']}")
        lines.append(f"  {row['attribute']}: {row['group']:<14} {what:<30} gap {_num(row['gap_reference'], True)} -> "
                     f"{_num(row['gap'], True)}, difference {_num(row['difference'], True)} "
                     f"{_ci(row['difference_ci'], True)}")
    return lines


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
        lines += format_gap_differences(comparison.get("subgroup_gaps"))
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
