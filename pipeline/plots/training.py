"""Training curves from each run's ``history.csv``."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from pipeline.plots.style import SERIES, style


def training_figures(histories: Mapping[str, pd.DataFrame]) -> tuple[go.Figure, go.Figure]:
    """Loss (solid: training, dashed: validation) and validation mean AUC per epoch, one colour per run.

    ``histories`` maps a run's name to its ``history.csv`` (`pipeline.training.runs.read_history`).
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
