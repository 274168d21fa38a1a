"""Class balance: positive and negative frequency per finding, and the loss contributions before and after weighting."""

import plotly.graph_objects as go
import shared
import streamlit as st
from plotly.subplots import make_subplots

from pipeline import plots
from pipeline.core.errors import InputError
from pipeline.core.paths import REPO_ROOT
from pipeline.data import stats
from pipeline.training import runs

st.title("Class balance")
st.caption(
    "Most images are negative for most findings, so an unweighted loss is dominated by negatives. The course's "
    "weighted loss multiplies positives by w_pos = freq_neg and negatives by w_neg = freq_pos, which makes both "
    "contribute equally."
)

options = dict(shared.NIH_LABEL_FILES)
default = "train-small.csv"
run = shared.chosen_run()
trained_on = None
with shared.guard():
    trained_on = runs.read_config(run.path).get("train") if run else None
if trained_on and (REPO_ROOT / trained_on).is_file():  # the sidebar run's own training file comes first
    default = f"{shared.display_path(REPO_ROOT / trained_on)} (training file of run {run.name})"
    options = {default: REPO_ROOT / trained_on, **options}
choice = st.selectbox("Training file", [*options, "Upload a file..."], index=list(options).index(default))
if choice == "Upload a file...":
    upload = st.file_uploader("Label file (NIH Data_Entry or course format)", type=["csv", "gz"])
    if upload is None:
        st.stop()
    try:
        table = shared.load_uploaded_labels(upload.name, upload.getvalue())
    except InputError as exc:
        shared.show_error(exc)
        st.stop()
else:
    table = shared.load_labels(str(options[choice]))

contributions = stats.loss_contributions(table)
findings = list(contributions.index)
st.metric("Images in the training file", f"{len(table):,}")

fig = go.Figure([
    go.Bar(name="Positive (freq_pos)", x=findings, y=contributions["freq_pos"], marker_color=plots.POSITIVE),
    go.Bar(name="Negative (freq_neg)", x=findings, y=contributions["freq_neg"], marker_color=plots.NEGATIVE),
])
fig.update_layout(title="Frequency of positive and negative labels", yaxis_title="Share of images (0-1)",
                  barmode="group", yaxis_range=[0, 1])
shared.chart(plots.style(fig, height=400))
st.caption(
    f"For each finding, the share of the {len(table):,} images labelled positive and negative "
    "(they sum to 1 per finding)."
)

fig = make_subplots(rows=1, cols=2, subplot_titles=["Before weighting", "After weighting"], horizontal_spacing=0.08)
for column, when in ((1, "before"), (2, "after")):
    for kind, color in (("pos", plots.POSITIVE), ("neg", plots.NEGATIVE)):
        fig.add_trace(go.Bar(name="Positive" if kind == "pos" else "Negative", x=findings,
                             y=contributions[f"{kind}_{when}"], marker_color=color, showlegend=column == 1,
                             legendgroup=kind), row=1, col=column)
fig.update_layout(title="Contribution of positive and negative images to the loss", barmode="group")
fig.update_yaxes(title_text="Contribution to the loss (per image)", row=1, col=1)
shared.chart(plots.side_legend(plots.style(fig, height=440)))
st.caption(
    "Before weighting, positives contribute freq_pos and negatives freq_neg; after, both contribute "
    "freq_pos x freq_neg, so the two bars of each finding are equal (note the different scales)."
)

with st.expander("The numbers"):
    frame = contributions.copy()
    frame.insert(0, "positives", table[findings].sum().astype(int))
    st.dataframe(frame.round(4))
