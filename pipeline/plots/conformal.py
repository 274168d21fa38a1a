"""The risk-coverage curve of abstention: miss rates and mean AUC of the images kept as the model abstains.

Drawn from ``risk_coverage.csv`` (`pipeline.evaluation.conformal.risk_coverage`), nothing recomputed;
``evaluate --plots --miss-rate`` writes it as ``conformal.html`` beside the other figures.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from pipeline.core.files import write_text_atomic
from pipeline.evaluation.results import Conformal
from pipeline.plots.style import NEGATIVE, NEUTRAL, POSITIVE, SERIES, style

CONFORMAL_PLOT = "conformal.html"


def risk_coverage_figure(curve: pd.DataFrame, conformal: Conformal) -> go.Figure:
    """Two panels against coverage (share of images kept): the miss rates with the promised rate, and mean AUC."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Miss rate of the images kept", "Mean AUC of the images kept"))
    x = curve["coverage"]
    hover = "coverage %{x:.2f} (%{customdata} images): %{y:.3f}<extra></extra>"
    fig.add_trace(go.Scatter(x=x, y=curve["miss_rate"], name="positives ruled out (findings with a threshold)",
                             line={"color": POSITIVE}, customdata=curve["n_kept"], hovertemplate=hover), row=1, col=1)
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


def write_conformal_plot(conformal: Conformal, curve: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write ``conformal.html`` into an evaluation folder, the Plotly library inline (it works copied alone)."""
    out = Path(out_dir)
    html = pio.to_html(risk_coverage_figure(curve, conformal), include_plotlyjs=True, full_html=True,
                       div_id="conformal", config={"displaylogo": False})
    return write_text_atomic(html, out / CONFORMAL_PLOT)
