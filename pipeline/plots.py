"""The Plotly figures of the toolkit, for the dashboard, notebooks and ``evaluate --plots``.

Evaluation curves (ROC, precision-recall, calibration) are drawn from the curve tables an evaluation
folder stores, so nothing is recomputed; dataset figures (prevalence, co-occurrence) from
`pipeline.stats.summarize`; training curves from each run's ``history.csv``. Every figure gets the same
look (`style`). Plotly only: no Streamlit, no TensorFlow.

``evaluate --plots`` writes ``roc.html``, ``pr.html`` and ``calibration.html`` next to ``metrics.json``. They
load ``plotly.min.js`` from the same folder, written once beside them (about 4.6 MB): the pages work offline,
unlike Plotly's CDN option, and three figures do not embed three copies of the library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from plotly.subplots import make_subplots

from pipeline.files import write_text_atomic
from pipeline.findings import FINDINGS
from pipeline.results import Summary

POSITIVE = "#c0392b"  # positives, high probabilities, leaks
NEGATIVE = "#2e86c1"  # negatives, the reference
NEUTRAL = "#7f8c8d"
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
          "#7f7f7f", "#393b79", "#ad494a", "#637939", "#843c39"]  # one colour per curve, 14 for the findings
PLOTLY_JS = "plotly.min.js"
EVALUATION_PLOTS = ("roc.html", "pr.html", "calibration.html")


class Curves(Protocol):
    """What an evaluation offers for plotting: `pipeline.results.Evaluation` or `SavedEvaluation`."""

    summary: Summary
    roc: pd.DataFrame
    pr: pd.DataFrame
    calibration: pd.DataFrame


# --- the look ----------------------------------------------------------------------------------------------------


def style(fig: go.Figure, height: int = 380, legend: bool = True) -> go.Figure:
    """The common look of every chart: title top left, the legend in one row between title and plot."""
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 80 if legend else 45, "b": 10},
        font={"size": 13},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0, "title": None},
        title={"x": 0, "xanchor": "left", "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 12},
               "font": {"size": 15}},
    )
    return fig


def side_legend(fig: go.Figure) -> go.Figure:
    """A legend in one column right of the plot, for charts with many series."""
    return fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                             margin={"t": 50})


def format_ci(value: float | None, interval: Sequence[float] | None) -> str:
    """``0.712 (95% CI 0.601-0.813)``, or what is known of it."""
    if value is None:
        return "undefined"
    return f"{value:.3f}" + (f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


# --- evaluation curves -------------------------------------------------------------------------------------------


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
    """Write ``roc.html``, ``pr.html`` and ``calibration.html`` (all 14 findings) and ``plotly.min.js`` to a folder.

    ``name`` labels the curves (default: the folder's name). Returns the HTML files written.
    """
    out = Path(out_dir)
    evals = {name or out.name: evaluation}
    figures = dict(zip(EVALUATION_PLOTS, (roc_figure(evals), pr_figure(evals), calibration_figure(evals)), strict=True))
    script = plotly.offline.get_plotlyjs()
    js = out / PLOTLY_JS
    if not js.is_file() or js.stat().st_size != len(script.encode()):
        write_text_atomic(script, js)
    written = []
    for file, fig in figures.items():
        html = pio.to_html(fig, include_plotlyjs="directory", full_html=True, div_id=Path(file).stem,
                           config={"displaylogo": False})
        written.append(write_text_atomic(html, out / file))
    return written


# --- dataset figures ---------------------------------------------------------------------------------------------


def bar_chart(categories: list, counts: list[int], title: str, category_title: str, count_title: str,
              color: str = NEGATIVE, horizontal: bool = False, text: list[str] | None = None) -> go.Figure:
    """A one-series bar chart of counts per category, the bars horizontal or upright, labelled with ``text``."""
    trace = go.Bar(x=counts, y=categories, orientation="h") if horizontal else go.Bar(x=categories, y=counts)
    trace.update(marker_color=color, text=text, textposition="outside", cliponaxis=False)
    axes = {"xaxis_title": count_title, "yaxis_title": category_title} if horizontal else \
        {"xaxis_title": category_title, "yaxis_title": count_title}
    fig = go.Figure(trace).update_layout(title=title, **axes)
    if text and counts:  # room for the labels beyond the longest bar
        fig.update_layout(**{"xaxis_range" if horizontal else "yaxis_range": [0, max(counts) * 1.25]})
    return style(fig, legend=False)


def prevalence_figure(summary: Mapping) -> go.Figure:
    """Images per finding, rarest at the bottom, from `pipeline.stats.summarize`."""
    prevalence = sorted(summary["prevalence"].items(), key=lambda item: item[1]["count"])
    return bar_chart(
        [f for f, _ in prevalence], [p["count"] for _, p in prevalence], "Prevalence per finding", "",
        "Images with the finding (count)", color=POSITIVE, horizontal=True,
        text=[f"{p['count']:,} ({p['percent']:.1f}%)" for _, p in prevalence],
    ).update_layout(height=480)


def cooccurrence_figure(summary: Mapping) -> go.Figure:
    """Images carrying both findings of each pair, from `pipeline.stats.summarize`; the diagonal left blank."""
    matrix = np.array(summary["cooccurrence"], dtype=float)
    np.fill_diagonal(matrix, np.nan)  # the diagonal (each finding's count) would drown the pairs
    fig = go.Figure(go.Heatmap(
        z=matrix, x=list(FINDINGS), y=list(FINDINGS), colorscale="Blues", colorbar={"title": "images"},
        hovertemplate="%{y} + %{x}: %{z:,} images<extra></extra>",
    ))
    fig.update_layout(title="Co-occurrence of findings", yaxis={"autorange": "reversed"})
    return style(fig, height=480, legend=False)


# --- training curves ---------------------------------------------------------------------------------------------


def training_figures(histories: Mapping[str, pd.DataFrame]) -> tuple[go.Figure, go.Figure]:
    """Loss (solid: training, dashed: validation) and validation mean AUC per epoch, one colour per run.

    ``histories`` maps a run's name to its ``history.csv`` (`pipeline.runs.read_history`).
    """
    loss, auc = go.Figure(), go.Figure()
    for r, (name, history) in enumerate(histories.items()):
        color = SERIES[r % len(SERIES)]
        for column, dash in (("loss", "solid"), ("val_loss", "dash")):
            if column in history:
                loss.add_trace(go.Scatter(x=history["epoch"], y=history[column], name=f"{name} {column}",
                                          line={"color": color, "dash": dash}, mode="lines+markers"))
        if "val_mean_auc" in history:
            auc.add_trace(go.Scatter(x=history["epoch"], y=history["val_mean_auc"], name=f"{name} val_mean_auc",
                                     line={"color": color}, mode="lines+markers"))
    loss.update_layout(title="Loss per epoch", xaxis_title="Epoch", yaxis_title="Loss (mean per image)")
    auc.update_layout(title="Validation mean AUC per epoch", xaxis_title="Epoch", yaxis_title="Mean AUC")
    few_epochs = max((len(h) for h in histories.values()), default=0) <= 20
    return tuple(style(fig.update_xaxes(dtick=1 if few_epochs else None)) for fig in (loss, auc))
