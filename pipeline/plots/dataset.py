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


# Groups of images per patient: one bar each up to 5, then wider ranges, so that the axis stays readable from the
# 549 one-image patients of the sample to the full metadata (up to 184 images per patient), filtered or not.
PER_PATIENT_GROUPS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


def images_per_patient_figure(histogram: Mapping[str, int]) -> go.Figure:
    """Patients per group of image counts, from `summarize`'s ``images_per_patient["histogram"]``.

    The groups up to the largest count present are drawn (empty ones too, so the scale is honest); the count
    axis turns logarithmic when the groups differ more than a hundredfold.
    """
    counts = {int(k): int(v) for k, v in histogram.items()}
    top = max(counts, default=1)
    labels, values = [], []
    for low, high in PER_PATIENT_GROUPS:
        if low > top:
            break
        labels.append(str(low) if high == low else f"{low}+" if high is None else f"{low}-{high}")
        values.append(sum(v for k, v in counts.items() if k >= low and (high is None or k <= high)))
    fig = bar_chart(labels, values, "Images per patient", "Images of the patient", "Patients (count)")
    fig.update_xaxes(type="category")
    shown = [v for v in values if v]
    if shown and max(shown) > 100 * min(shown):
        fig.update_yaxes(type="log", title="Patients (count, log scale)")
    return fig

