"""Subgroup figures from a `SubgroupAudit` (``subgroups.json``): a forest plot of subgroup AUCs and one of gaps.

Every number is drawn with its 95% interval; a cell the small-group rule withholds is a grey "too few" label on
its row, never a point. ``evaluate --plots`` writes ``subgroups_auc.html`` and ``subgroups_gaps.html``, each with
a menu choosing the finding (or measure), beside the evaluation's other figures.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from pipeline.core.files import write_text_atomic
from pipeline.core.findings import FINDINGS
from pipeline.evaluation.results import Rate, Subgroup, SubgroupAudit
from pipeline.plots.style import NEGATIVE, NEUTRAL, POSITIVE, style

SUBGROUP_PLOTS = ("subgroups_auc.html", "subgroups_gaps.html")
GAP_MEASURES = {"underdiagnosis": "Underdiagnosis (abnormal called normal)",
                "overdiagnosis": "Overdiagnosis (normal called abnormal)",
                "sensitivity": "Sensitivity", "fpr": "False-positive rate"}


def row_label(group: Subgroup) -> str:
    """``sex: female (25 images)``: a subgroup's row, with its size."""
    return f"{group.attribute}: {group.name} ({group.n_images} images)"


def rate_of(group: Subgroup, measure: str, finding: str | None) -> Rate:
    """The `Rate` of ``measure`` (auc, sensitivity, fpr, underdiagnosis, overdiagnosis) in one subgroup."""
    if measure in ("underdiagnosis", "overdiagnosis"):
        return getattr(group, measure)
    if finding is None:
        raise ValueError(f"{measure} needs a finding")
    return getattr(group.findings[finding], measure)


def _forest(audit: SubgroupAudit, measure: str, finding: str | None, gap: bool) -> list[go.Scatter]:
    """The traces of one forest plot: values (or gaps) with intervals, and "too few" labels where withheld."""
    labels, values, low, high, few_labels, few_text = [], [], [], [], [], []
    for group in audit.groups:
        rate = rate_of(group, measure, finding)
        value, interval = (rate.gap, rate.gap_ci) if gap else (rate.value, rate.ci)
        if value is None:
            few_labels.append(row_label(group))
            few_text.append(rate.too_few or ("no gap: the rest has too few" if gap else "undefined"))
            continue
        labels.append(row_label(group))
        values.append(value)
        low.append(value - interval[0] if interval else 0.0)
        high.append(interval[1] - value if interval else 0.0)
    name = f"{finding}: " if finding else ""
    kind = "gap to the rest" if gap else measure
    points = go.Scatter(
        x=values, y=labels, mode="markers", name=f"{name}{kind} (95% CI)",
        marker={"size": 9, "color": POSITIVE if gap else NEGATIVE, "symbol": "diamond" if gap else "square"},
        error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "thickness": 1.5},
        hovertemplate="%{y}<br>%{x:.3f}<extra></extra>",
    )
    withheld = go.Scatter(
        x=[0.0 if gap else 0.5] * len(few_labels), y=few_labels, mode="text", text=few_text, name="too few",
        textfont={"color": NEUTRAL, "size": 11}, hoverinfo="skip", showlegend=False,
    )
    return [points, withheld]


def _figure(audit: SubgroupAudit, pages: dict[str, list[go.Scatter]], title: str, x_title: str,
            x_range: list[float], reference: float) -> go.Figure:
    """One figure holding every page's traces, a menu showing one page at a time (the first at start)."""
    fig = go.Figure()
    spans = []
    for traces in pages.values():
        spans.append((len(fig.data), len(traces)))
        fig.add_traces(traces)
    for i, trace in enumerate(fig.data):
        trace.visible = i < spans[0][1]
    if len(pages) > 1:
        buttons = []
        for label, (start, count) in zip(pages, spans, strict=True):
            visible = [start <= i < start + count for i in range(len(fig.data))]
            buttons.append({"label": label, "method": "update", "args": [{"visible": visible}]})
        fig.update_layout(updatemenus=[{"buttons": buttons, "x": 1, "xanchor": "right", "y": 1.01,
                                        "yanchor": "bottom", "direction": "down"}])
    rows = [row_label(g) for g in audit.groups]
    fig.add_vline(x=reference, line_dash="dot", line_color=NEUTRAL)
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1], type="category")
    fig.update_xaxes(range=x_range, title=x_title, zeroline=False)
    fig.update_layout(title=f"{title}: {audit.n_images} images, 95% bootstrap intervals")
    return style(fig, height=max(420, 24 * len(rows) + 140))


def subgroup_auc_figure(audit: SubgroupAudit, finding: str | None = None) -> go.Figure:
    """Forest plot of each subgroup's AUC with its interval; one ``finding``, or all with a menu (None)."""
    findings = [finding] if finding else list(FINDINGS)
    pages = {f: _forest(audit, "auc", f, gap=False) for f in findings}
    return _figure(audit, pages, "AUC per subgroup", "AUC (dotted: chance)", [0, 1.02], 0.5)


def subgroup_gap_figure(audit: SubgroupAudit, measure: str = "underdiagnosis", finding: str | None = None,
                        ) -> go.Figure:
    """Forest plot of each subgroup's gap to the rest (its own bootstrap interval) in one measure.

    ``measure`` underdiagnosis or overdiagnosis (any finding), or sensitivity or fpr of ``finding``; with
    ``measure`` None, every one of them with a menu (sensitivity per finding).
    """
    if measure is not None:
        pages = {_page_name(measure, finding): _forest(audit, measure, finding, gap=True)}
    else:
        pages = {_page_name(m, None): _forest(audit, m, None, gap=True) for m in ("underdiagnosis", "overdiagnosis")}
        pages |= {_page_name("sensitivity", f): _forest(audit, "sensitivity", f, gap=True) for f in FINDINGS}
    return _figure(audit, pages, "Gap to the rest per subgroup", "subgroup - rest (dotted: no gap)", [-1, 1], 0.0)


def _page_name(measure: str, finding: str | None) -> str:
    return GAP_MEASURES[measure] + (f": {finding}" if finding else "")


def write_subgroup_plots(audit: SubgroupAudit, out_dir: str | Path) -> list[Path]:
    """Write ``subgroups_auc.html`` and ``subgroups_gaps.html``, each carrying the Plotly library inline."""
    out = Path(out_dir)
    figures = (subgroup_auc_figure(audit), subgroup_gap_figure(audit, measure=None))
    written = []
    for file, fig in zip(SUBGROUP_PLOTS, figures, strict=True):
        html = pio.to_html(fig, include_plotlyjs=True, full_html=True, div_id=Path(file).stem,
                           config={"displaylogo": False})
        written.append(write_text_atomic(html, out / file))
    return written
