"""The figure of one prediction: the 14 probabilities, ranked, against the operating thresholds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from pipeline.plots.style import NEGATIVE, POSITIVE, style

LABEL_X = 1.02  # where the probability values are written, just right of 1.0 (no threshold or bar reaches it)


def probability_figure(probabilities: np.ndarray, names: Sequence[str], thresholds: Mapping[str, float]) -> go.Figure:
    """Horizontal bars of each finding's probability, highest first; a tick marks each finding's threshold and a
    bar that reaches it is red (`POSITIVE`)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")
    ranked = [names[k] for k in order]
    values = np.asarray(probabilities)[order]
    above = [name in thresholds and p >= thresholds[name] for name, p in zip(ranked, values, strict=True)]
    fig = go.Figure(go.Bar(
        x=values, y=ranked, orientation="h", name="Probability",
        marker_color=[POSITIVE if a else NEGATIVE for a in above], hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    # the values in a column right of the axis's end, where no bar end or threshold tick can sit under them
    fig.add_trace(go.Scatter(x=[LABEL_X] * len(values), y=ranked, mode="text", text=[f"{p:.3f}" for p in values],
                             textposition="middle right", hoverinfo="skip", name="Probability value",
                             cliponaxis=False))
    marked = [name for name in ranked if name in thresholds]
    if marked:
        fig.add_trace(go.Scatter(
            x=[thresholds[name] for name in marked], y=marked, mode="markers", name="Operating threshold",
            marker={"symbol": "line-ns", "size": 22, "line": {"width": 3, "color": "#222"}},
            hovertemplate="%{y} threshold: %{x:.3f}<extra></extra>",
        ))
    fig.update_layout(title="Probability of each finding", xaxis_title="Probability (0-1)",
                      xaxis={"range": [0, 1.17], "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0]},
                      yaxis={"autorange": "reversed"})
    return style(fig, height=520, legend=False)
