"""What the pages show of localization: the Localization view of Model performance, and boxes on Predict.

Kept out of the page files so that the pages only call it; the numbers come from `pipeline.explain.localization` and
`pipeline.explain.localization_folder`, and nothing here imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import shared
import streamlit as st

from pipeline import plots
from pipeline.core import paths
from pipeline.data import boxes, image_folders
from pipeline.explain import localization, localization_folder

SCORE_NAMES = {"pointing": "Pointing game (hit rate)", "mass_share": "Share of map mass inside the box",
               **{f"iou_{level:g}": f"IoU, map thresholded at {level:g} x max" for level in localization.IOU_LEVELS}}
GALLERY_PAGE = 8
TOLERANCE = localization.TOLERANCE_PX  # pointing-game margin, px of the 1024 px original


@st.cache_data(show_spinner=False)
def box_list() -> pd.DataFrame:
    """The NIH box list (984 boxes), read once."""
    return boxes.load_boxes()


@st.cache_data(show_spinner=False)
def read_localization(folder: str, modified: float) -> localization_folder.Localization:
    """`localization_folder.read_localization`, reread when the result changes (``modified``: its time)."""
    return localization_folder.read_localization(folder)


def show_results(folders: list[Path]) -> None:
    """The Localization view: model against baseline per finding, with intervals, and the gallery of boxes."""
    artifacts = paths.artifacts_dir()
    names = {paths.shorten(folder, artifacts): folder for folder in folders}
    chosen = st.selectbox("Localization result", list(names)) if len(names) > 1 else next(iter(names))
    folder = names[chosen]
    result = read_localization(str(folder), localization_folder.modified(folder))
    summary, per_box = result.summary, result.per_box
    score = st.radio("Score", list(SCORE_NAMES), format_func=SCORE_NAMES.get, horizontal=True)
    frame = localization_folder.results_frame(summary, score)
    shared.chart(plots.localization_figure(frame, SCORE_NAMES.get(score, score)))
    st.caption(
        f"Measured on {summary['n_boxes']} radiologist boxes on {summary['n_images']} images of "
        f"`{shared.display_path(summary['images_dir'])}` (boxes from `{shared.display_path(summary['boxes_file'])}`). "
        f"Pointing game: a hit when the map's maximum lies within {summary['tolerance_px_original']:g} px (of the "
        "1024 px original) of the box. Baseline: for each image, the mean of that finding's boxes on all other "
        "images of the box list, a map that knows no image; the model localizes only where it beats it. "
        "Whiskers: 95% bootstrap intervals over images; none with fewer than 2 images."
    )
    shown = frame[["finding", "boxes", "images"]].rename(columns={"finding": "Finding", "boxes": "Boxes",
                                                                   "images": "Images"})
    for source, title in (("model", "Model"), ("baseline", "Baseline (box prior)"), ("difference", "Model - baseline")):
        shown[title] = [_with_interval(row[source], row[f"{source}_low"], row[f"{source}_high"])
                        for _, row in frame.iterrows()]
    st.dataframe(shown, hide_index=True)
    if summary.get("skipped"):
        with st.expander(f"Skipped ({len(summary['skipped'])})"):
            st.dataframe(pd.DataFrame(summary["skipped"]), hide_index=True)

    gallery = result.gallery_files
    st.subheader("Boxes over the heatmaps")
    if not gallery:
        st.info("This result has no gallery; rerun `python -m pipeline localize` to make one.")
        return
    pages = (len(gallery) + GALLERY_PAGE - 1) // GALLERY_PAGE
    page = st.number_input(f"Gallery page (of {pages})", 1, pages, 1) if pages > 1 else 1
    files = [localization_folder.gallery_name(i, f) for i, f in zip(per_box["Image"], per_box["Finding"], strict=True)]
    rows = per_box.assign(file=files).set_index("file")
    shown_files = gallery[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
    for start in range(0, len(shown_files), 4):
        for column, path in zip(st.columns(4), shown_files[start : start + 4], strict=False):
            row = rows.loc[[path.name]].iloc[0] if path.name in rows.index else None
            caption = path.stem if row is None else (
                f"{row['Image']}: {row['Finding']} (p = {row['probability']:.2f}), "
                f"{'hit' if row['model_pointing'] else 'miss'}, mass share {row['model_mass_share']:.2f}")
            column.image(str(path), caption=caption, width="stretch")
    st.caption("The model's Grad-CAM map of the box's finding (red: high), with the radiologist's box.")


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    """``0.167 [0.000, 0.500]``, or the value alone where there is no interval."""
    if value is None or pd.isna(value):
        return "undefined"
    return f"{value:.3f}" + ("" if low is None or pd.isna(low) else f" [{low:.3f}, {high:.3f}]")


def predict_boxes(image_name: str, image: np.ndarray, overlay: np.ndarray, maps: np.ndarray,
                  names: list[str]) -> tuple[np.ndarray, np.ndarray, pd.DataFrame | None]:
    """The original and the overlay with the image's NIH boxes drawn, and each box's pointing-game result.

    Returns the images unchanged and None when the file name has no box in the NIH list.
    """
    image_boxes = boxes.boxes_for(box_list(), [image_name])
    if image_boxes.empty:
        return image, overlay, None
    maps_by_finding = dict(zip(names, maps, strict=True))
    scored = localization.score_image(maps_by_finding, image_boxes, (image.shape[1], image.shape[0]))
    table = pd.DataFrame({
        "Finding": scored["Finding"],
        "Pointing game": np.where(scored["model_pointing"] == 1, "hit", "miss"),
        "Mass share in box": scored["model_mass_share"],
    })
    return (image_folders.with_boxes(image, image_name, box_list()),
            image_folders.with_boxes(overlay, image_name, box_list()), table)
