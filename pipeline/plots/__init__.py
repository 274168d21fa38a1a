"""Every figure of the toolkit (Plotly only: no Streamlit, no TensorFlow), for the dashboard, notebooks and
``evaluate --plots``; one look for all (`style`). Submodules by what they show; the names below are the API.
"""

from pipeline.plots.conformal import CONFORMAL_PLOT, risk_coverage_figure, write_conformal_plot
from pipeline.plots.dataset import (
    bar_chart,
    box_outline_figure,
    cooccurrence_figure,
    images_per_patient_figure,
    label_frequency_figure,
    leakage_figure,
    loss_contribution_figure,
    prevalence_figure,
)
from pipeline.plots.evaluation import (
    EVALUATION_PAGE,
    EVALUATION_PLOTS,
    Curves,
    ap_legend,
    auc_legend,
    brier_legend,
    calibration_figure,
    pr_figure,
    roc_figure,
    write_evaluation_plots,
)
from pipeline.plots.localization import localization_figure
from pipeline.plots.prediction import probability_figure
from pipeline.plots.style import NEGATIVE, NEUTRAL, POSITIVE, SERIES, format_ci, side_legend, style
from pipeline.plots.subgroups import (
    GAP_MEASURES,
    SUBGROUP_PLOTS,
    subgroup_auc_figure,
    subgroup_gap_figure,
    write_subgroup_plots,
)
from pipeline.plots.training import training_figures

__all__ = [
    "EVALUATION_PAGE", "EVALUATION_PLOTS", "NEGATIVE", "NEUTRAL", "POSITIVE", "SERIES", "Curves", "ap_legend",
    "auc_legend", "bar_chart", "box_outline_figure", "brier_legend", "calibration_figure", "cooccurrence_figure",
    "format_ci", "images_per_patient_figure", "label_frequency_figure", "leakage_figure", "localization_figure",
    "loss_contribution_figure", "pr_figure", "prevalence_figure", "probability_figure", "roc_figure", "side_legend",
    "style", "training_figures", "write_evaluation_plots",
    "GAP_MEASURES", "SUBGROUP_PLOTS", "subgroup_auc_figure", "subgroup_gap_figure", "write_subgroup_plots",
    # the conformal risk-coverage curve (pipeline.plots.conformal)
    "CONFORMAL_PLOT", "risk_coverage_figure", "write_conformal_plot",
]
