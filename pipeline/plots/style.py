"""The one look of every figure: colours, layout (`style`), side legends and "value [interval]" text."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

POSITIVE = "#c0392b"  # positives, high probabilities, leaks
NEGATIVE = "#2e86c1"  # negatives, the reference
NEUTRAL = "#7f8c8d"
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
          "#7f7f7f", "#393b79", "#ad494a", "#637939", "#843c39"]  # one colour per curve, 14 for the findings


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
