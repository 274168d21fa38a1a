"""Dataset: prevalence, co-occurrence, findings per image, demographics, example images and the NIH boxes."""

from collections.abc import Callable

import numpy as np
import pandas as pd
import shared
import streamlit as st

from pipeline import plots
from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS, NO_FINDING
from pipeline.data import boxes, image_folders, stats

GALLERY_SIZE = 8  # images per gallery page


@st.cache_data(show_spinner="Computing statistics...")
def filtered(path: str, findings: tuple, views: tuple, sexes: tuple, age_range: tuple | None) -> pd.DataFrame:
    """The label table of ``path`` after the filters (cached: the full metadata has 112,120 rows)."""
    table = shared.load_labels(path)
    return stats.filter_table(table, list(findings), list(views), list(sexes), age_range)


@st.cache_data(show_spinner=False)
def summary_of(path: str, findings: tuple, views: tuple, sexes: tuple, age_range: tuple | None) -> dict:
    return stats.summarize(filtered(path, findings, views, sexes, age_range))


@st.cache_data(show_spinner=False)
def box_list() -> pd.DataFrame:
    return boxes.load_boxes()


def gallery_image(name: str) -> np.ndarray:
    """A thumbnail (made once, then cached) as RGB with its NIH boxes, if any, scaled and drawn."""
    return image_folders.with_boxes(shared.thumbnail(str(shared.image_index()[name])), name, box_list())


def show_gallery(names: list[str], caption: Callable[[str], str], key: str) -> None:
    """The images, `GALLERY_SIZE` per page in rows of 4, each with ``caption(name)`` (made for shown ones only)."""
    pages = (len(names) + GALLERY_SIZE - 1) // GALLERY_SIZE
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key=key) if pages > 1 else 1
    shown = names[(page - 1) * GALLERY_SIZE : page * GALLERY_SIZE]
    for row in range(0, len(shown), 4):
        for column, image_name in zip(st.columns(4), shown[row : row + 4], strict=False):
            column.image(gallery_image(image_name), caption=caption(image_name))


name, path = shared.data_choice()
table = shared.load_labels(str(path))
st.title("Dataset")
st.caption(f"{name} (`{shared.display_path(path)}`, {len(table):,} images); switch in the sidebar.")

with st.container(border=True):
    columns = st.columns([3, 1, 1, 2])
    chosen_findings = columns[0].multiselect(
        "Findings", [*FINDINGS, NO_FINDING], placeholder="all images",
        help="Keeps images with any of the chosen findings.",
    )
    chosen_views = columns[1].multiselect("View", sorted(table["View"].dropna().unique()), placeholder="all")
    chosen_sexes = columns[2].multiselect("Sex", sorted(table["Sex"].dropna().unique()), placeholder="all")
    ages = columns[3].slider("Age (years)", 0, 100, (0, 100), help="The full range keeps every image.")
age_range = None if ages == (0, 100) else ages
filters = (str(path), tuple(chosen_findings), tuple(chosen_views), tuple(chosen_sexes), age_range)
summary = summary_of(*filters)
n = summary["n_images"]

a, b, c, d = st.columns(4)
a.metric("Images", f"{n:,}", help="Images matching the filters.")
b.metric("Patients", f"{summary['n_patients']:,}")
c.metric("Images per patient", f"{summary['images_per_patient']['mean']:.2f}", help="Mean; see the chart below.")
d.metric("No finding", f"{summary['no_finding']['count']:,}",
         help=f"{summary['no_finding']['percent']:.1f}% of the images carry none of the 14 findings.")
if n == 0:
    st.warning("No image matches these filters; widen them.")
    st.stop()

left, right = st.columns(2, gap="medium")
with left:
    shared.chart(plots.prevalence_figure(summary))
    st.caption("How many of the selected images carry each finding; an image can carry several.")
with right:
    shared.chart(plots.cooccurrence_figure(summary))
    st.caption("Images carrying both findings of a pair; the diagonal is left blank (see the prevalence).")

left, mid, right = st.columns(3, gap="medium")
with left:
    per_image = summary["findings_per_image"]
    shared.chart(plots.bar_chart(list(per_image), list(per_image.values()), "Findings per image",
                                 "Findings on the image", "Images (count)"))
with mid:
    shared.chart(plots.images_per_patient_figure(summary["images_per_patient"]["histogram"]))
with right:
    age_bins = summary.get("age", {}).get("bins", {})
    shared.chart(plots.bar_chart(list(age_bins), list(age_bins.values()), "Age", "Age (years)", "Images (count)"))
left, right = st.columns(2, gap="medium")
with left:
    sex = summary.get("sex", {})
    shared.chart(plots.bar_chart(list(sex), list(sex.values()), "Sex", "Sex", "Images (count)",
                                 text=[f"{v:,}" for v in sex.values()]).update_layout(height=300))
with right:
    view = summary.get("view", {})
    shared.chart(plots.bar_chart(list(view), list(view.values()), "View position",
                                 "View (PA: posterior-anterior, AP: anterior-posterior)", "Images (count)",
                                 text=[f"{v:,}" for v in view.values()])
                 .update_layout(height=300))

st.header("Example images")
selection = filtered(*filters)
try:
    available = shared.image_index()
except InputError as exc:  # $CHESTXRAY_IMAGES names no folder
    shared.show_error(exc)
    available = {}
where = "the image folder" if image_folders.is_custom() else "`nih/images` and `nih/boxed`"
present = sorted(name for name in selection["Image"] if name in available)  # dict lookups: fast at 112,120
all_boxes = box_list()
if not present:
    st.info(f"None of the {n:,} selected images is in {where}; {shared.images_note()}")
else:
    st.caption(
        f"{len(present):,} of the selected images are in {where}, shown {GALLERY_SIZE} at a time with their "
        "NIH labels; NIH radiologist boxes are drawn where they exist."
    )
    labels = selection.set_index("Image")[list(FINDINGS)]
    show_gallery(present, lambda name: f"{name}: {', '.join(f for f in FINDINGS if labels.at[name, f]) or NO_FINDING}",
                 key="gallery_page")

st.header("Radiologist bounding boxes")
with_boxes = all_boxes[[name in available for name in all_boxes["Image"]]]
if len(with_boxes):
    st.caption(f"{with_boxes['Image'].nunique():,} of the images in {where} carry some of the NIH's "
               f"{len(all_boxes):,} boxes; they are drawn on them below, finding by finding.")
else:
    st.info(
        f"None of the {len(available):,} images in {where} has a box: the NIH drew its "
        f"{len(all_boxes):,} boxes (`BBox_List_2017`) on {all_boxes['Image'].nunique():,} other images. "
        "So the boxes are shown without their images: where they lie on the 1024 x 1024 originals, and as a table."
    )
with_findings = sorted(all_boxes["Finding"].unique())
box_finding = st.selectbox("Boxes of", with_findings, index=with_findings.index("Cardiomegaly"),
                           help="The 8 findings the NIH drew boxes for.")
shown_boxes = all_boxes[all_boxes["Finding"] == box_finding]
left, right = st.columns([1, 1], gap="medium")
with left:
    shared.chart(plots.box_outline_figure(shown_boxes, box_finding, boxes.ORIGINAL_SIZE))
    st.caption("Each outline is one radiologist's box; the image's left side is the patient's right.")
with right:
    st.dataframe(shown_boxes, hide_index=True, height=520, column_config={
        c: st.column_config.NumberColumn(f"{c} (px)", format="%.0f") for c in ("x", "y", "w", "h")
    })
boxed_here = sorted(with_boxes.loc[with_boxes["Finding"] == box_finding, "Image"].unique())
if boxed_here:
    st.subheader(f"{box_finding} boxes on their images ({len(boxed_here):,})")
    show_gallery(boxed_here, lambda name: f"{name}: {box_finding} box", key="boxes_page")
