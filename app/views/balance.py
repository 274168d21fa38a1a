"""Class balance: positive and negative frequency per finding, and the loss contributions before and after weighting."""

import shared
import streamlit as st

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

shared.chart(plots.label_frequency_figure(contributions))
st.caption(
    f"For each finding, the share of the {len(table):,} images labelled positive and negative "
    "(they sum to 1 per finding)."
)

shared.chart(plots.loss_contribution_figure(contributions))
st.caption(
    "Before weighting, positives contribute freq_pos and negatives freq_neg; after, both contribute "
    "freq_pos x freq_neg, so the two bars of each finding are equal (note the different scales)."
)

with st.expander("The numbers"):
    frame = contributions.copy()
    frame.insert(0, "positives", table[findings].sum().astype(int))
    st.dataframe(frame.round(4))
