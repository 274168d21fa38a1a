"""The figure of a localization result: the model's Grad-CAM scores against the box-prior baseline."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pipeline.plots.style import NEUTRAL, POSITIVE, style


def localization_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Per finding and overall: the model's and the baseline's mean score as bars with their 95% intervals.

    ``frame`` is `pipeline.explain.localization_folder.results_frame` of one score.
    """
    fig = go.Figure()
    for source, color, name in (("model", POSITIVE, "Model (Grad-CAM)"),
                                ("baseline", NEUTRAL, "Baseline (box prior, leave-one-out)")):
        values = frame[source].astype(float)
        fig.add_trace(go.Bar(
            x=frame["finding"], y=values, name=name, marker_color=color,
            error_y={"type": "data", "symmetric": False,
                     "array": (frame[f"{source}_high"].astype(float) - values).fillna(0),
                     "arrayminus": (values - frame[f"{source}_low"].astype(float)).fillna(0)},
            hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>",
        ))
    fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1.05],
                      yaxis_title="Mean over boxes (95% CI over images)")
    return style(fig, height=420)
