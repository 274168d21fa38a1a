"""Evaluation curves (ROC, precision-recall, calibration) from the curve tables an evaluation folder stores.

Nothing is recomputed. ``evaluate --plots`` writes ``curves.html`` next to ``metrics.json``: the three figures
on one page that says which model, label file and image count it shows, with the Plotly library inline once
(about 4.9 MB). So the page works offline and when copied alone (a page that loads the library from beside
it opens blank once copied; three self-contained pages would carry three copies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import Protocol

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from plotly.subplots import make_subplots

from pipeline.core.files import write_text_atomic
from pipeline.core.findings import FINDINGS
from pipeline.evaluation.results import Summary
from pipeline.plots.style import NEUTRAL, SERIES, format_ci, side_legend, style

EVALUATION_PAGE = "curves.html"
EVALUATION_PLOTS = (EVALUATION_PAGE,)


class Curves(Protocol):
    """What an evaluation offers for plotting: `pipeline.evaluation.results.Evaluation` or `SavedEvaluation`."""

    summary: Summary
    roc: pd.DataFrame
    pr: pd.DataFrame
    calibration: pd.DataFrame


# --- the look ----------------------------------------------------------------------------------------------------


def auc_legend(summary: Summary, finding: str) -> str:
    """``AUC 0.712 (95% CI ...)`` of one finding."""
    return "AUC " + format_ci(summary.auc[finding], summary.auc_ci[finding])


def ap_legend(summary: Summary, finding: str) -> str:
    """``AP 0.210`` of one finding."""
    ap = summary.average_precision[finding]
    return f"AP {ap:.3f}" if ap is not None else "AP undefined"


def brier_legend(summary: Summary, finding: str) -> str:
    """``Brier 0.081`` of one finding."""
    brier = summary.brier[finding]
    return f"Brier {brier:.3f}" if brier is not None else "Brier undefined"


def roc_figure(evals: Mapping[str, Curves], finding: str | None = None) -> go.Figure:
    """ROC curves; with one ``finding``, each evaluation's operating threshold as a diamond (None: all 14)."""
    fig = _curves(evals, finding, "roc", ("fpr", "tpr"),
                  ("False positive rate (1 - specificity)", "True positive rate (sensitivity)"), auc_legend)
    if finding is not None:  # each evaluation's operating point: its threshold's (1 - specificity, sensitivity)
        for e, (name, result) in enumerate(evals.items()):
            point = result.summary.at_threshold[finding]
            if point.sensitivity is not None and point.specificity is not None:
                fig.add_trace(go.Scatter(
                    x=[1 - point.specificity], y=[point.sensitivity], mode="markers",
                    marker={"size": 11, "symbol": "diamond", "color": SERIES[e % len(SERIES)]},
                    name=f"{name}: threshold {result.summary.thresholds[finding]:.3f}",
                ))
    return fig


def pr_figure(evals: Mapping[str, Curves], finding: str | None = None) -> go.Figure:
    """Precision-recall curves; with one evaluation and one ``finding``, its prevalence (chance) as a line."""
    fig = _curves(evals, finding, "pr", ("recall", "precision"), ("Recall (sensitivity)", "Precision (PPV)"),
                  ap_legend)
    if finding is not None and len(evals) == 1:
        prevalence = next(iter(evals.values())).summary.prevalence[finding]
        fig.add_hline(y=prevalence, line_dash="dot", line_color=NEUTRAL,
                      annotation_text=f"prevalence {prevalence:.3f} (chance)")
    return fig


def calibration_figure(evals: Mapping[str, Curves], finding: str | None = None) -> go.Figure:
    """Reliability diagrams: observed share of positives against mean predicted probability per bin."""
    return _curves(evals, finding, "calibration", ("mean_predicted", "observed"),
                   ("Mean predicted probability (bins of 0.1)", "Observed share of positives"), brier_legend)


def _curves(evals: Mapping[str, Curves], finding: str | None, kind: str, axes: tuple[str, str],
            titles: tuple[str, str], legend: Callable[[Summary, str], str]) -> go.Figure:
    """Curves from each evaluation's ``kind`` table (roc, pr or calibration), ``axes`` its x and y columns.

    One finding: a curve per evaluation. All findings (None) of one evaluation: a curve per finding. All
    findings of several: a grid of 14 panels. ``legend(summary, finding)`` is the figure of merit after each name.
    """
    x, y = axes
    every = finding is None
    findings = list(FINDINGS) if every else [finding]
    grid = len(evals) > 1 and every
    fig = make_subplots(rows=4, cols=4, subplot_titles=findings, horizontal_spacing=0.05, vertical_spacing=0.07) \
        if grid else go.Figure()
    for e, (name, result) in enumerate(evals.items()):
        frame = getattr(result, kind)
        for f, current in enumerate(findings):
            points = frame[frame["finding"] == current].dropna(subset=[x, y])
            label = name if grid else f"{current if every else name}: {legend(result.summary, current)}"
            trace = go.Scatter(
                x=points[x], y=points[y], name=label, mode="lines+markers" if kind == "calibration" else "lines",
                line={"color": SERIES[(f if every and not grid else e) % len(SERIES)]},
                legendgroup=name, showlegend=not grid or f == 0,
                hovertemplate=f"{current}, {name}<br>{x} %{{x:.3f}}, {y} %{{y:.3f}}<extra></extra>",
            )
            fig.add_trace(trace, **({"row": f // 4 + 1, "col": f % 4 + 1} if grid else {}))
    if kind != "pr":  # y = x: chance for ROC, perfect calibration for a reliability diagram
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": NEUTRAL},
                      **({"row": "all", "col": "all", "exclude_empty_subplots": True} if grid else {}))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    if grid:  # no room for axis titles on 14 panels: the chart's title names the axes
        fig.update_layout(title=f"{titles[1]} against {titles[0].lower()}, per finding")
        return side_legend(style(fig, height=900))
    fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
    style(fig, height=520)
    return side_legend(fig) if every or len(evals) > 2 else fig


def write_evaluation_plots(evaluation: Curves, out_dir: str | Path, name: str | None = None) -> list[Path]:
    """Write ``curves.html``: the ROC, precision-recall and calibration curves (all 14 findings) on one page.

    The page names what it shows (model or predictions file, label file, image count, thresholds, when) and
    carries the Plotly library inline, once: the one file works offline and copied anywhere on its own. ``name``
    labels the curves (default: the folder's name). Returns the files written.
    """
    out = Path(out_dir)
    label = name or out.name
    evals = {label: evaluation}
    figures = {"ROC curves": roc_figure(evals), "Precision-recall curves": pr_figure(evals),
               "Calibration (reliability diagrams)": calibration_figure(evals)}
    summary = evaluation.summary
    model = summary.model_source or "an unrecorded model"
    title = f"Evaluation {label}: {Path(model).name} on {summary.n_images:,} images of " \
            f"{Path(summary.labels_file or '?').name}"
    facts = {
        "model": f"checkpoint {summary.checkpoint}" if summary.checkpoint else f"predictions file {model}",
        "label file": f"{summary.labels_file or '?'} (SHA-256 {summary.labels_sha256 or '?'})",
        "images": f"{summary.n_images:,}",
        "mean AUC": format_ci(summary.mean_auc, summary.mean_auc_ci),
        "thresholds": summary.threshold_source.describe(summary.target_sensitivity),
        "evaluated": summary.created or "?",
    }
    sections = []
    for heading, fig in figures.items():
        fig.update_layout(title=None)
        div = pio.to_html(fig, include_plotlyjs=False, full_html=False, config={"displaylogo": False})
        sections.append(f"<h2>{escape(heading)}</h2>\n{div}")
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em auto;max-width:1200px}}th{{text-align:left;padding-right:1em}}</style>
<script>{plotly.offline.get_plotlyjs()}</script></head>
<body><h1>{escape(title)}</h1>
<table>{rows}</table>
<p>Every number on this page was measured on the label file and images named above; AUC intervals are 95%
bootstrap intervals over images. For research and education only: not a medical device.</p>
{chr(10).join(sections)}
</body></html>
"""
    return [write_text_atomic(page, out / EVALUATION_PAGE)]
