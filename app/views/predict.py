"""Predict: the 14 probabilities of one X-ray and its Grad-CAM heatmaps. The only page that loads TensorFlow."""

import io
from pathlib import Path
from typing import TYPE_CHECKING

import localization as localization_view
import numpy as np
import plotly.graph_objects as go
import shared
import streamlit as st
from PIL import Image

from pipeline import imaging, paths, plots
from pipeline.errors import InputError

PICK_LIST = 5000  # more images than this are picked by typing a file name
DEFAULT_IMAGE = "00000001_000.png"  # the first sample image, as before the boxed images joined the list

if TYPE_CHECKING:  # keras is imported when the model is first needed, behind a spinner
    import keras


@st.cache_resource(show_spinner="Loading the model (TensorFlow)...", max_entries=2)
def load_model(path: str, modified: float) -> "keras.Model":
    """The checkpoint as a Keras model, loaded once per file version (``modified`` is its mtime)."""
    from pipeline import model

    return model.load(path)


@st.cache_data(show_spinner="Running the model and Grad-CAM...", max_entries=8)
def analyse(checkpoint: str, modified: float, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Probabilities, the 14 heatmaps, the finding names and the model's input size, for one image.

    The heatmaps stay at the model's input size whatever the upload's size, so the cache stays small;
    `gradcam.overlay` scales them up to the image.
    """
    from pipeline import gradcam, model

    net = load_model(checkpoint, modified)
    size = model.input_size(net)
    probabilities, maps = gradcam.heatmaps(net, image, full_size=False)
    return probabilities, maps, model.finding_names(net), size


def blend(image: np.ndarray, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """`pipeline.gradcam.overlay`, imported here so that TensorFlow loads only once a model is needed."""
    from pipeline import gradcam

    return gradcam.overlay(image, heatmap, opacity)


def choose_image(column, available: dict) -> str:
    """The picked image's name: a list for up to `PICK_LIST` images, else its file name typed in."""
    if not available:
        raise InputError("the image folder holds no PNG, JPEG or DICOM file; upload one instead")
    names = list(available)
    if len(names) <= PICK_LIST:
        return column.selectbox("Or pick an image", names, index=names.index(DEFAULT_IMAGE) if DEFAULT_IMAGE in
                                names else 0, help="Used when no file is uploaded; " + shared.images_note())
    typed = column.text_input("Or give an image's file name", names[0], help=shared.images_note()).strip()
    if typed not in available:
        raise InputError(f"{typed}: no such image in the folder; give a file name such as {names[0]}")
    return typed


def png_bytes(rgb: np.ndarray) -> bytes:
    """The image encoded as PNG, for the download button."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


st.title("Predict")
st.warning(shared.DISCLAIMER + " Probabilities come from a model trained on a small research sample.",
           icon=":material/warning:")

run = shared.chosen_run()
if run is None:
    shared.explain_missing_run()
    st.stop()
if run.checkpoint is None:
    st.info(f"Run {run.name} has no checkpoint yet; train it with:")
    st.code(shared.train_command(run.path), language="bash")
    st.stop()

evaluation = shared.headline_evaluation(run)
thresholds, threshold_note = {}, "no evaluation of this run yet, so no operating thresholds are marked"
if evaluation is not None:
    threshold_note = "the run's evaluation could not be read, so no operating thresholds are marked"
    with shared.guard():
        result = shared.read_metrics(evaluation)
        thresholds = result.thresholds
        threshold_note = (f"thresholds from `{paths.shorten(evaluation, paths.artifacts_dir())}`, "
                          f"{result.threshold_source.describe(result.target_sensitivity)}")

left, right = st.columns(2)
upload = left.file_uploader("Upload a chest X-ray (PNG, JPEG or DICOM)", type=["png", "jpg", "jpeg", "dcm", "dicom"],
                            help="Read in memory and never written to disk.")
try:
    available = shared.image_index()
    sample = choose_image(right, available)
    image = imaging.load_image(upload) if upload is not None else imaging.load_image(available[sample])
except InputError as exc:
    shared.show_error(exc)
    st.stop()
image_name = upload.name if upload is not None else sample

try:
    probabilities, maps, names, size = analyse(str(run.checkpoint), run.checkpoint.stat().st_mtime, image)
except InputError as exc:  # e.g. a checkpoint that is not a model of this project
    shared.show_error(exc)
    st.stop()
order = np.argsort(-probabilities, kind="stable")
st.caption(
    f"Image `{image_name}` ({image.shape[1]} x {image.shape[0]} px, resized to {size} x {size} for the model); "
    f"model `{shared.display_path(run.checkpoint)}` (run {run.name}); {threshold_note}."
)

ranked = [names[k] for k in order]
values = probabilities[order]
above = [name in thresholds and p >= thresholds[name] for name, p in zip(ranked, values, strict=True)]
fig = go.Figure(go.Bar(
    x=values, y=ranked, orientation="h", name="Probability", text=[f"{p:.3f}" for p in values],
    textposition="outside", cliponaxis=False, marker_color=[plots.POSITIVE if a else plots.NEGATIVE for a in above],
    hovertemplate="%{y}: %{x:.3f}<extra></extra>",
))
marked = [name for name in ranked if name in thresholds]
if marked:
    fig.add_trace(go.Scatter(
        x=[thresholds[name] for name in marked], y=marked, mode="markers", name="Operating threshold",
        marker={"symbol": "line-ns", "size": 22, "line": {"width": 3, "color": "#222"}},
        hovertemplate="%{y} threshold: %{x:.3f}<extra></extra>",
    ))
fig.update_layout(title="Probability of each finding", xaxis_title="Probability (0-1)", xaxis_range=[0, 1.08],
                  yaxis={"autorange": "reversed"})
plot, heat = st.columns([2, 3], gap="large")
with plot:
    shared.chart(plots.style(fig, height=520, legend=False))
    st.caption(
        "Findings sorted by probability. Each finding is a separate yes/no question, so the probabilities do not "
        "sum to 1. " + ("A black tick marks the finding's operating threshold; red bars reach it." if marked else "")
    )

with heat:
    finding = st.selectbox("Grad-CAM for", ranked, help="Where the model's evidence for this finding lies.")
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05)
    overlay = blend(image, maps[names.index(finding)], opacity)
    shown, overlay, box_table = localization_view.predict_boxes(image_name, image, overlay, maps, names)
    original, blended = st.columns(2)
    original.image(shown, caption=f"Original: {image_name}", width="stretch")
    blended.image(overlay, caption=f"Grad-CAM: {finding} ({probabilities[names.index(finding)]:.3f})",
                  width="stretch")
    if box_table is not None:
        st.dataframe(box_table, hide_index=True, column_config={
            "Mass share in box": st.column_config.NumberColumn(format="%.3f")})
        st.caption(f"`{image_name}` has NIH radiologist boxes, drawn on both images. Pointing game: a hit when "
                   f"the finding's Grad-CAM maximum lies within {localization_view.TOLERANCE:g} px (of the 1024 px "
                   "original) of its box.")
    st.caption("Red marks the regions that raised this finding's score most; blue, the least. It shows what the "
               "model used, which is not necessarily where the finding is.")
    st.download_button("Download the overlay (PNG)", png_bytes(overlay), icon=":material/download:",
                       file_name=f"{Path(image_name).stem}_{finding}_gradcam.png", mime="image/png")
