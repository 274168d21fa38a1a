"""Dataset figures: counts, prevalence, co-occurrence, class balance, radiologist boxes and split leakage."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline.core.findings import FINDINGS
from pipeline.plots.style import NEGATIVE, POSITIVE, side_legend, style


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


def label_frequency_figure(contributions: pd.DataFrame) -> go.Figure:
    """Per finding, the share of images labelled positive and negative (`pipeline.data.stats.loss_contributions`)."""
    findings = list(contributions.index)
    fig = go.Figure([
        go.Bar(name="Positive (freq_pos)", x=findings, y=contributions["freq_pos"], marker_color=POSITIVE),
        go.Bar(name="Negative (freq_neg)", x=findings, y=contributions["freq_neg"], marker_color=NEGATIVE),
    ])
    fig.update_layout(title="Frequency of positive and negative labels", yaxis_title="Share of images (0-1)",
                      barmode="group", yaxis_range=[0, 1])
    return style(fig, height=400)


def loss_contribution_figure(contributions: pd.DataFrame) -> go.Figure:
    """Side by side, what positives and negatives contribute to the loss before and after class weighting."""
    findings = list(contributions.index)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Before weighting", "After weighting"],
                        horizontal_spacing=0.08)
    for column, when in ((1, "before"), (2, "after")):
        for kind, color in (("pos", POSITIVE), ("neg", NEGATIVE)):
            fig.add_trace(go.Bar(name="Positive" if kind == "pos" else "Negative", x=findings,
                                 y=contributions[f"{kind}_{when}"], marker_color=color, showlegend=column == 1,
                                 legendgroup=kind), row=1, col=column)
    fig.update_layout(title="Contribution of positive and negative images to the loss", barmode="group")
    fig.update_yaxes(title_text="Contribution to the loss (per image)", row=1, col=1)
    return side_legend(style(fig, height=440))


def box_outline_figure(box_table: pd.DataFrame, finding: str, side: int) -> go.Figure:
    """Every box of ``box_table`` (``x, y, w, h`` in pixels) outlined on a ``side`` x ``side`` original frame."""
    x, y, w, h = (box_table[c].to_numpy() for c in ("x", "y", "w", "h"))
    gap = np.full(len(box_table), None)  # every box as a closed path, boxes separated by None, in one trace
    fig = go.Figure(go.Scatter(
        x=np.column_stack([x, x + w, x + w, x, x, gap]).ravel(),
        y=np.column_stack([y, y, y + h, y + h, y, gap]).ravel(),
        mode="lines", line={"width": 1, "color": POSITIVE}, opacity=0.5, hoverinfo="skip",
    ))
    fig.update_xaxes(range=[0, side], title=f"x (pixels of the {side} px original)", constrain="domain")
    fig.update_yaxes(range=[side, 0], title="y (pixels)", scaleanchor="x", constrain="domain")
    fig.update_layout(title=f"{len(box_table)} {finding} boxes on the {side} x {side} originals")
    return style(fig, height=520, legend=False)


def leakage_figure(audit: Mapping) -> go.Figure:
    """The official split against a naive one: test patients and images with the patient in training
    (`pipeline.data.leakage.audit_official_split`)."""
    splits = ["Official (by patient)", "Naive (by image)"]
    both = (audit["official"], audit["naive"])
    fig = go.Figure([
        go.Bar(name="Test patients also in training", x=splits,
               y=[100 * s["test_patients_in_train"] for s in both], marker_color=NEGATIVE,
               text=[f"{s['shared_patients']:,} of {s['test_patients']:,}" for s in both]),
        go.Bar(name="Test images whose patient is in training", x=splits,
               y=[100 * s["test_images_affected_share"] for s in both], marker_color=POSITIVE,
               text=[f"{s['test_images_affected']:,} of {s['test_images']:,}" for s in both]),
    ])
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_layout(title="Leakage into the test set", yaxis_title="Share of the test set (%)", yaxis_range=[0, 100])
    return style(fig, height=400)
