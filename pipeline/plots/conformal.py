"""The risk-coverage curve of abstention: miss rates and mean AUC of the images kept as the model abstains.

Drawn from ``risk_coverage.csv`` (`pipeline.evaluation.conformal.risk_coverage`), nothing recomputed;
``evaluate --plots --miss-rate`` writes it as ``conformal.html`` beside the other figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from pipeline.core.files import write_text_atomic
from pipeline.evaluation.results import MIN_COUNT, Conformal
from pipeline.plots.style import NEGATIVE, NEUTRAL, POSITIVE, SERIES, style

CONFORMAL_PLOT = "conformal.html"


MISS_LINE = "positives ruled out (findings with a threshold)"
BAND = "95% interval (exact binomial)"
TOO_FEW = "too few positives"


def risk_coverage_figure(curve: pd.DataFrame, conformal: Conformal, min_positives: int = MIN_COUNT) -> go.Figure:
    """Two panels against coverage (share of images kept): the miss rates with the promised rate, and mean AUC.

    The pooled miss rate is drawn solid with its Clopper-Pearson band while at least ``min_positives`` positives
    remain (the small-group rule), then dotted, without a band, and labelled "too few positives"; its hover says
    "k of n positives missed [low, high]". A file written before the counts were stored gets the plain line.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Miss rate of the images kept", "Mean AUC of the images kept"))
    x = curve["coverage"]
    hover = "coverage %{x:.2f} (%{customdata} images): %{y:.3f}<extra></extra>"
    if curve["positives"].notna().all():
        _miss_with_interval(fig, curve, min_positives)
    else:
        fig.add_trace(go.Scatter(x=x, y=curve["miss_rate"], name=MISS_LINE, line={"color": POSITIVE},
                                 customdata=curve["n_kept"], hovertemplate=hover), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=curve["set_miss"], name="share of an image's findings outside its set",
                             line={"color": NEGATIVE, "dash": "dash"}, customdata=curve["n_kept"],
                             hovertemplate=hover), row=1, col=1)
    fig.add_hline(y=conformal.miss_rate, line_dash="dot", line_color=NEUTRAL, row=1, col=1,
                  annotation_text=f"promised {conformal.miss_rate:g}", annotation_position="top left")
    fig.add_trace(go.Scatter(x=x, y=curve["mean_auc"], name="mean AUC", line={"color": SERIES[2]},
                             customdata=curve["n_kept"], hovertemplate=hover), row=1, col=2)
    fig.update_xaxes(title_text="Coverage (share of images answered)", range=[1.02, -0.02])
    fig.update_yaxes(title_text="Miss rate", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="Mean AUC", row=1, col=2)
    measured = Path(conformal.test or "?").name
    fig.update_layout(title=f"Abstention: the least certain images first (measured on {measured})")
    style(fig, height=480)
    # The subplot titles sit where style() puts the legend: the legend goes below the plots instead.
    return fig.update_layout(legend={"y": -0.22, "yanchor": "top"}, margin={"b": 60})


def _miss_with_interval(fig: go.Figure, curve: pd.DataFrame, min_positives: int) -> None:
    """The miss rate solid with its band where enough positives remain, dotted and labelled where too few do."""
    x = curve["coverage"]
    enough = (curve["positives"] >= min_positives).to_numpy()
    # The dotted part starts at the last solid point, so that the two meet.
    dotted = ~enough | np.r_[enough[:-1] & ~enough[1:], False]
    custom = curve[["n_kept", "missed", "positives", "miss_low", "miss_high"]].astype(float).to_numpy()
    hover = ("coverage %{x:.2f} (%{customdata[0]} images): %{customdata[1]} of %{customdata[2]} positives missed, "
             "%{y:.3f} [%{customdata[3]:.3f}, %{customdata[4]:.3f}]<extra></extra>")
    band = {"x": x[enough], "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip"}
    fig.add_trace(go.Scatter(y=curve["miss_high"][enough], showlegend=False, **band), row=1, col=1)
    fig.add_trace(go.Scatter(y=curve["miss_low"][enough], name=BAND, fill="tonexty",
                             fillcolor="rgba(192, 57, 43, 0.18)", **band), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=curve["miss_rate"].where(enough), name=MISS_LINE, line={"color": POSITIVE},
                             customdata=custom, hovertemplate=hover), row=1, col=1)
    if enough.all():
        return
    fig.add_trace(go.Scatter(x=x, y=curve["miss_rate"].where(dotted), line={"color": POSITIVE, "dash": "dot"},
                             name=f"{TOO_FEW} (fewer than {min_positives})", customdata=custom,
                             hovertemplate=hover), row=1, col=1)
    first = int(np.argmin(enough))  # the first row with too few positives
    at = curve["miss_rate"].where(dotted).iloc[max(first - 1, 0):].dropna()
    fig.add_annotation(x=x.iloc[first], y=at.iloc[0] if len(at) else 0, text=TOO_FEW, showarrow=True, arrowhead=0,
                       arrowcolor=POSITIVE, ax=0, ay=-30, font={"color": POSITIVE, "size": 12}, row=1, col=1)


def write_conformal_plot(conformal: Conformal, curve: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write ``conformal.html`` into an evaluation folder, the Plotly library inline (it works copied alone)."""
    out = Path(out_dir)
    html = pio.to_html(risk_coverage_figure(curve, conformal), include_plotlyjs=True, full_html=True,
                       div_id="conformal", config={"displaylogo": False})
    return write_text_atomic(html, out / CONFORMAL_PLOT)
