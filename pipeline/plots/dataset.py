"""Dataset figures: counts per category, prevalence and co-occurrence from `pipeline.data.stats.summarize`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from pipeline.core.findings import FINDINGS
from pipeline.plots.style import NEGATIVE, POSITIVE, style


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
    """Images per finding, rarest at the bottom, from `pipeline.data.stats.summarize`."""
    prevalence = sorted(summary["prevalence"].items(), key=lambda item: item[1]["count"])
    return bar_chart(
        [f for f, _ in prevalence], [p["count"] for _, p in prevalence], "Prevalence per finding", "",
        "Images with the finding (count)", color=POSITIVE, horizontal=True,
        text=[f"{p['count']:,} ({p['percent']:.1f}%)" for _, p in prevalence],
    ).update_layout(height=480)


def cooccurrence_figure(summary: Mapping) -> go.Figure:
    """Images carrying both findings of each pair, from `pipeline.data.stats.summarize`; the diagonal left blank."""
    matrix = np.array(summary["cooccurrence"], dtype=float)
    np.fill_diagonal(matrix, np.nan)  # the diagonal (each finding's count) would drown the pairs
    fig = go.Figure(go.Heatmap(
        z=matrix, x=list(FINDINGS), y=list(FINDINGS), colorscale="Blues", colorbar={"title": "images"},
        hovertemplate="%{y} + %{x}: %{z:,} images<extra></extra>",
    ))
    fig.update_layout(title="Co-occurrence of findings", yaxis={"autorange": "reversed"})
    return style(fig, height=480, legend=False)
