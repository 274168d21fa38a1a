"""Predict: the 14 probabilities of uploaded X-rays, their Grad-CAM heatmaps, and a guard against non-X-rays.

Answers come from the run's ONNX export (`pipeline.inference.serving`) when it has a current one, so the page needs
no TensorFlow and answers the first upload quickly; the model session is opened when the page loads, before
any upload. Several files give a table with a CSV download; clicking or choosing a row shows that image's
Grad-CAM.
"""

from __future__ import annotations

import io
from pathlib import Path

import guarantees_view
import localization_view
import numpy as np
import pandas as pd
import shared
import streamlit as st
from PIL import Image

from pipeline import plots
from pipeline.core import paths
from pipeline.core.errors import InputError
from pipeline.core.text import count, plural
from pipeline.data import imaging
from pipeline.evaluation import provenance
from pipeline.evaluation.results import Conformal
from pipeline.explain import gradcam
from pipeline.inference import ood, serving

SHOW_ANYWAY = "Show the probabilities anyway"
PICK_LIST = 5000  # more images than this are picked by typing a file name
DEFAULT_IMAGE = "00000001_000.png"  # the first sample image, as before the boxed images joined the list


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def load_predictor(path: str, modified: float) -> serving.Predictor:
    """The checkpoint's export (or, without one, the checkpoint in TensorFlow), once per file version."""
    return serving.load_predictor(path)


@st.cache_resource(show_spinner=False, max_entries=2)
def load_stats(run_dir: str, modified: float) -> ood.Typicality | None:
    """The run's typicality statistics (None without them), once per file version."""
    return ood.load(run_dir)


@st.cache_data(show_spinner="Running the model and Grad-CAM...", max_entries=32)
def analyse(checkpoint: str, modified: float, stats_modified: float, decoded: np.ndarray) -> serving.Answer:
    """Probabilities, the 14 heatmaps at the model's input size, and the guard's verdict, for one image."""
    predictor = load_predictor(checkpoint, modified)
    stats = load_stats(str(Path(checkpoint).parent), stats_modified)
    return serving.analyse(predictor, stats, [decoded], heatmap_size=predictor.input_size)[0]


def choose_image(column, available: dict, uploaded: bool) -> str:
    """The picked image's name: a list for up to `PICK_LIST` images, else its file name typed in; disabled (and
    saying so) while files are uploaded, since the uploads are what is shown."""
    if not available:
        raise InputError("the image folder holds no PNG, JPEG or DICOM file; upload one instead")
    names = list(available)
    note = ("Not used while files are uploaded: remove them (x) to predict a picked image. " if uploaded else
            "Used when no file is uploaded; ") + shared.images_note()
    if len(names) <= PICK_LIST:
        picked = column.selectbox("Or pick an image", names, index=names.index(DEFAULT_IMAGE) if DEFAULT_IMAGE in
                                  names else 0, help=note, disabled=uploaded)
    else:
        picked = column.text_input("Or give an image's file name", names[0], help=note, disabled=uploaded).strip()
    if uploaded:
        column.caption("Showing the uploaded files; the picker is used when no file is uploaded.")
    typed = picked
    if typed not in available:
        raise InputError(f"{typed}: no such image in the folder; give a file name such as {names[0]}")
    return typed


def png_bytes(rgb: np.ndarray) -> bytes:
    """The image encoded as PNG, for the download button."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


def show_verdict(answer: serving.Answer, key: str) -> bool:
    """Warn about an out-of-distribution image; True when the probabilities may be shown."""
    verdict = answer.verdict
    if verdict.in_distribution:
        return True
    st.error(f"**This does not look like a chest X-ray the model can read:** {verdict.reason}. The model "
             "answers with probabilities for any picture, so for this one they mean nothing.",
             icon=":material/block:")
    return st.checkbox(SHOW_ANYWAY, value=False, key=f"anyway-{key}",
                       help="The probabilities and heatmaps of an out-of-distribution image are not meaningful.")


def show_image(image_name: str, image: np.ndarray, answer: serving.Answer, names: list[str], size: int,
               thresholds: dict[str, float], model_note: str, guarantees: Conformal | None,
               guarantee_source: str) -> None:
    """The probability chart, the Grad-CAM overlay and the three answers of one image; ``model_note`` says which
    model answered, ``guarantees`` (`guarantees_view.source_of`) what its answers promise."""
    probabilities, maps = answer.probabilities, answer.heatmaps
    typicality = "" if answer.verdict.typicality is None else f" typicality {answer.verdict.typicality:.2f};"
    st.caption(
        f"Image `{image_name}` ({image.shape[1]} x {image.shape[0]} px, resized to {size} x {size} for the model);"
        f"{typicality} {model_note}."
    )
    ranked = [names[k] for k in np.argsort(-probabilities, kind="stable")]
    marked = any(name in thresholds for name in names)
    plot, heat = st.columns([2, 3], gap="large")
    with plot:
        shared.chart(plots.probability_figure(probabilities, names, thresholds))
        tick = "A black tick marks the finding's operating threshold; red bars reach it." if marked else ""
        st.caption("Findings sorted by probability. Each finding is a separate yes/no question, so the probabilities "
                   "do not sum to 1. " + tick)
    with heat:
        finding = st.selectbox("Grad-CAM for", ranked, help="Where the model's evidence for this finding lies.")
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05)
        view = gradcam.bounded(image)  # overlays of a 50-megapixel image would cost gigabytes at full size
        overlay = gradcam.overlay(view, maps[names.index(finding)], opacity)
        shown, overlay, box_table = localization_view.predict_boxes(image_name, view, overlay, maps, names)
        original, blended = st.columns(2)
        original.image(shown, caption=f"Original: {image_name}", width="stretch")
        blended.image(overlay, caption=f"Grad-CAM: {finding} ({probabilities[names.index(finding)]:.3f})",
                      width="stretch")
        if box_table is not None:
            st.dataframe(box_table, hide_index=True, column_config={
                "Mass share in box": st.column_config.NumberColumn(format="%.3f")})
            st.caption(f"`{image_name}` has NIH radiologist boxes, drawn on both images. Pointing game: a hit when "
                       f"the finding's Grad-CAM maximum lies within {localization_view.TOLERANCE:g} px (of the 1024 "
                       "px original) of its box.")
        st.caption("Red marks the regions that raised this finding's score most; blue, the least. It shows what the "
                   "model used, which is not necessarily where the finding is.")
        st.download_button("Download the overlay (PNG)", png_bytes(overlay), icon=":material/download:",
                           file_name=f"{Path(image_name).stem}_{finding}_gradcam.png", mime="image/png")
    guarantees_view.show_answers(guarantees, guarantee_source, names, answer)


def batch_table(results: list[tuple[str, serving.Answer | None, str | None]], names: list[str],
                thresholds: dict[str, float], guarantees: Conformal | None, show_flagged: bool) -> pd.DataFrame:
    """One row per file: file, status, each finding's probability (hidden for flagged images), the conformal
    answers, typicality and the reason last, so the long reasons never push the findings out of view; empty cells
    where nothing applies."""
    rows = []
    for file, answer, error in results:
        row: dict[str, object] = {"File": file, **dict.fromkeys(names, np.nan)}
        if answer is None:
            row.update({"Status": "unreadable", "Typicality": np.nan, "Reason": error or ""})
        else:
            verdict = answer.verdict
            typicality = np.nan if verdict.typicality is None else float(verdict.typicality)
            row.update({"Status": "ok" if verdict.in_distribution else "out of distribution",
                        "Typicality": typicality, "Reason": verdict.reason or ""})
            if verdict.in_distribution or show_flagged:
                row.update({name: round(float(p), 4) for name, p in zip(names, answer.probabilities, strict=True)})
        row.update(guarantees_view.batch_columns(guarantees, names, answer))
        rows.append(row)
    first, last = ["File", "Status", *names], ["Typicality", "Reason"]
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in first + last))  # e.g. the answers
    table = pd.DataFrame(rows, columns=[*first, *extra, *last])
    table[[*names, "Typicality"]] = table[[*names, "Typicality"]].astype(float)
    for name in names:
        if name in thresholds:
            limit = thresholds[name]
            table[f"{name} >= threshold"] = table[name].map(lambda p, t=limit: "" if pd.isna(p) else
                                                            "yes" if p >= t else "no")
    return table


st.title("Predict")
st.warning(shared.DISCLAIMER + " Probabilities come from a model trained on a small research sample.",
           icon=":material/warning:")

run = shared.chosen_run()
if run is None:
    shared.explain_missing_run()
    st.stop()
if run.checkpoint is None:
    st.info(shared.no_checkpoint_note(run), icon=":material/info:")
    st.code(shared.train_command(run.path), language="bash")
    st.stop()

# The cached predictor and answers are keyed on the checkpoint's and its export's times, so a new export
# (`chestxray export`) is picked up without restarting the app.
checkpoint_time = mtime(run.checkpoint) + mtime(serving.export_paths(run.checkpoint)[1])
stats_time = mtime(run.checkpoint.parent / ood.STATS_FILE)
# the statistics are valid only for the checkpoint they were fitted to: keyed on both, like the predictor
stats_key = stats_time + mtime(run.checkpoint.parent / ood.INFO_FILE) + checkpoint_time
try:  # opened now, before any upload, so that the first answer does not wait for it
    predictor = load_predictor(str(run.checkpoint), checkpoint_time)
except InputError as exc:  # e.g. a checkpoint that is not a model of this project
    shared.show_error(exc)
    st.stop()
names, size = predictor.names, predictor.input_size

evaluation = shared.headline_evaluation(run)
thresholds, threshold_note = {}, "no evaluation of this run yet, so no operating thresholds are marked"
if evaluation is not None:
    threshold_note = "the run's evaluation could not be read, so no operating thresholds are marked"
    with shared.guard():
        result = shared.read_metrics(evaluation)
        shown = f"`{paths.shorten(evaluation, paths.artifacts_dir())}`"
        matched = provenance.match(evaluation, run.checkpoint, shown)  # only thresholds measured on these weights
        if matched.ok:
            thresholds = result.thresholds
            threshold_note = (f"{matched.note or f'thresholds from {shown}'}, "
                              f"{result.threshold_source.describe(result.target_sensitivity)}")
        else:
            threshold_note = f"no operating thresholds are marked: {matched.note}"
model_note = (f"model `{shared.display_path(run.checkpoint)}` (run {run.name}, served by {predictor.source}); "
              f"{threshold_note}")
guarantees, guarantee_source = None, "the run's evaluation could not be read"
with shared.guard():
    guarantees, guarantee_source = guarantees_view.source_of(evaluation, run.checkpoint)
if predictor.note is not None:
    st.warning(shared.redact(predictor.note), icon=":material/warning:")
if stats_time == 0.0:
    st.info(f"Run {run.name} has no typicality statistics, so only the cheap checks (colour, flat, noise, aspect "
            "ratio) guard against images that are not chest X-rays; add them with:")
    st.code(shared.export_command(run.path), language="bash")
elif load_stats(str(run.checkpoint.parent), stats_key) is None:
    st.warning(f"Only the cheap checks (colour, flat, noise, aspect ratio) guard these images: "
               f"{ood.unavailable(run.checkpoint.parent)}", icon=":material/warning:")

left, right = st.columns(2)
upload_mb = int(st.get_option("server.maxUploadSize"))  # .streamlit/config.toml: sized to the server's memory
uploads = left.file_uploader("Upload chest X-rays (PNG, JPEG or DICOM; several at once for a table)",
                             type=["png", "jpg", "jpeg", "dcm", "dicom"], accept_multiple_files=True,
                             help=f"Up to {upload_mb} MB and {imaging.MAX_PIXELS // 1_000_000} megapixels per "
                                  "file. Read in memory and never written to disk.")
try:
    available = shared.image_index()
    sample = choose_image(right, available, bool(uploads))
except InputError as exc:  # a picker problem matters only when nothing was uploaded
    if not uploads:
        shared.show_error(exc)
        st.stop()
    sample = None
sources = [(upload.name, upload) for upload in uploads or []] or [(sample, available[sample])]

results: list[tuple[str, serving.Answer | None, str | None]] = []
images: dict[str, np.ndarray] = {}
for index, (name, source) in enumerate(sources):
    label = name if all(other != name for other, _ in sources[:index]) else f"{name} ({index + 1})"
    try:
        if getattr(source, "size", 0) > upload_mb * 2**20:  # Streamlit refuses these too; never decode one
            raise InputError(f"{name}: {source.size / 2**20:.0f} MB is over the {upload_mb} MB upload limit; "
                             "downscale the image or export it compressed")
        decoded = imaging.load_decoded(source)
    except InputError as exc:
        results.append((label, None, shared.redact(str(exc))))
        continue
    images[label] = imaging.to_gray(decoded)
    results.append((label, analyse(str(run.checkpoint), checkpoint_time, stats_key, decoded), None))

if len(results) == 1:
    label, answer, error = results[0]
    if answer is None:
        shared.show_error(InputError(error))
        st.stop()
    if show_verdict(answer, label):
        show_image(label, images[label], answer, names, size, thresholds, model_note, guarantees, guarantee_source)
    st.stop()

flagged = sum(1 for _, answer, _ in results if answer is not None and not answer.verdict.in_distribution)
unreadable = [(label, error) for label, answer, error in results if answer is None]
st.subheader(f"{count(len(results), 'file')}: {len(results) - flagged - len(unreadable)} predicted, "
             f"{flagged} out of distribution, {len(unreadable)} unreadable")
for _, error in unreadable:
    shared.show_error(InputError(error))
if flagged:
    st.error(f"**{flagged} of the files {plural(flagged, 'does', 'do')} not look like chest X-rays the model can "
             f"read**; {plural(flagged, 'its', 'their')} probabilities are hidden because they mean nothing.",
             icon=":material/block:")
show_flagged = bool(flagged) and st.checkbox(SHOW_ANYWAY + " (flagged files)", value=False, key="anyway-batch")
table = batch_table(results, names, thresholds, guarantees, show_flagged)
above = [column for column in table if column.endswith(">= threshold")]
# numbers shown as fixed-width text: the grid would print an empty number as "None" (and they still sort right)
shown = table.drop(columns=above)
numbers = [*names, "Typicality"]
shown[numbers] = shown[numbers].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
marked = [name for name in names if name in thresholds]
styled = shown.style.apply(
    lambda column: [f"color: {plots.POSITIVE}; font-weight: bold" if p >= thresholds[column.name] else ""
                    for p in table[column.name].fillna(-1.0)], subset=marked
)
event = st.dataframe(styled, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                     key="batch-table", column_config={"Reason": st.column_config.TextColumn(
                         "Reason", width="medium", help="Why a file was not predicted; hover a cell for all of it")})
st.caption("Probabilities of each finding; " + ("red: at or above the finding's operating threshold (the CSV has a "
           f"yes/no column per finding), {threshold_note}." if thresholds else threshold_note + ".")
           + " Typicality at least 1 passes the guard.")
st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(), icon=":material/download:",
                   file_name="predictions.csv", mime="text/csv")

readable = [label for label, answer, _ in results if answer is not None]
ticked = [table["File"].iloc[row] for row in event.selection.rows]
if ticked and ticked[0] not in readable:
    st.info(f"`{ticked[0]}` could not be read, so it has no Grad-CAM; tick another row.")
elif readable:
    # one source of truth: while a row is ticked the selector shows that row and is locked, so the two never differ
    if ticked:
        chosen = st.selectbox("Show the Grad-CAM of", readable, index=readable.index(ticked[0]),
                              key=f"ticked-{ticked[0]}", disabled=True,
                              help="The row ticked in the table; untick it to choose here.")
    else:
        chosen = st.selectbox("Show the Grad-CAM of", readable, key="grad-cam-choice",
                              help="One row of the table, in detail; ticking a row in the table chooses it too.")
    answer = next(answer for label, answer, _ in results if label == chosen)
    if answer.verdict.in_distribution or show_flagged:
        show_image(chosen, images[chosen], answer, names, size, thresholds, model_note, guarantees, guarantee_source)
    else:
        st.info(f"`{chosen}` is out of distribution ({answer.verdict.reason}); tick the box above to see it anyway.")
