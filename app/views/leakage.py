"""Leakage: patients shared between label files, and the official NIH split against a naive split by image."""

import pandas as pd
import shared
import streamlit as st

from pipeline import plots
from pipeline.core import paths
from pipeline.core.errors import InputError
from pipeline.data import leakage

DEFAULT_FILES = ["train-small.csv", "valid-small.csv", "test.csv"]


@st.cache_data(show_spinner="Auditing the official split (reads all 112,120 rows)...")
def audit() -> dict:
    return leakage.audit_official_split(paths.metadata_file(), paths.train_val_list(), paths.test_list(), seed=0)


st.title("Patient leakage")
st.caption(
    "A patient whose images sit in both the training and the test file lets a model score by recognising the "
    "patient rather than the disease. Choose two or more label files: every pair is checked for shared patients."
)

chosen = st.multiselect("Label files from nih/", list(shared.NIH_LABEL_FILES), default=DEFAULT_FILES)
uploads = st.file_uploader(
    "Or add your own label files (NIH Data_Entry or course format, .csv or .csv.gz)",
    type=["csv", "gz"], accept_multiple_files=True,
)
tables: dict[str, pd.DataFrame] = {}
for name in chosen:
    tables[name] = shared.load_labels(str(shared.NIH_LABEL_FILES[name]))
for upload in uploads or []:
    try:
        tables[upload.name] = shared.load_uploaded_labels(upload.name, upload.getvalue())
    except InputError as exc:
        shared.show_error(exc)

if len(tables) < 2:
    st.info("Choose at least two label files to compare.")
else:
    reports = leakage.check_all_pairs(tables)
    leaking = [r for r in reports if r.leaks]
    if leaking:
        worst = max(leaking, key=lambda r: len(r.patients))
        st.error(
            f"**Leakage**: {len(leaking)} of {len(reports)} pairs share patients; e.g. {len(worst.patients):,} "
            f"patients are in both {worst.name_a} and {worst.name_b}. Split by patient "
            "(the `split` command: `.venv/bin/chestxray split --help`).",
            icon=":material/error:",
        )
    else:
        st.success(
            f"**No leakage**: no patient is in more than one of the {len(tables)} files ({len(reports)} pairs).",
            icon=":material/check_circle:",
        )
    rows = [
        {
            "File A": r.name_a,
            "File B": r.name_b,
            "Images in A": len(tables[r.name_a]),
            "Images in B": len(tables[r.name_b]),
            "Shared patients": len(r.patients),
            "Their images in A": len(r.images_a),
            "Their images in B": len(r.images_b),
            "Verdict": "LEAK" if r.leaks else "no shared patient",
        }
        for r in reports
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption("Patients are matched by patient id; a shared patient's images are counted on each side.")
    for report in leaking:
        with st.expander(f"Shared patients of {report.name_a} and {report.name_b} ({len(report.patients):,})"):
            st.write(", ".join(report.patients[:200]) + (" ..." if len(report.patients) > 200 else ""))

st.header("The official NIH split versus a naive split by image")
result = audit()
official, naive = result["official"], result["naive"]
st.caption(
    f"{result['n_images']:,} images of {result['n_patients']:,} patients in `{result['metadata']}`. The official "
    f"lists put {official['train_images']:,} images in train/validation and {official['test_images']:,} in test, "
    "by patient; the naive split draws a test set of the same size at random by image (seed "
    f"{result['seed']})."
)
a, b = st.columns(2)
for column, split, title in ((a, official, "Official split"), (b, naive, "Naive split")):
    column.metric(f"{title}: test patients also in training", f"{split['shared_patients']:,}",
                  help="Patients with images on both sides of the split.")
    column.caption(f"{split['test_patients_in_train']:.1%} of its {split['test_patients']:,} test patients")
shared.chart(plots.leakage_figure(result))
st.caption(
    f"A random split by image leaves {naive['test_images_affected_share']:.0%} of the test images beside another "
    "image of the same patient in training; the official split leaves "
    f"{official['test_images_affected_share']:.0%}. Every split this project makes is by patient."
)
