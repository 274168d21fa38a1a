"""The label loader: both formats, and every validation error as one line that names the problem."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data.label_files import compute_class_freqs, load_labels, write_splits


def test_nih_format_full_metadata_known_truths(full_metadata):
    assert len(full_metadata) == 112_120
    assert full_metadata["PatientId"].nunique() == 30_805
    assert full_metadata["Infiltration"].sum() == 19_894
    assert full_metadata["Hernia"].sum() == 227
    assert list(full_metadata.columns[:16]) == ["Image", "PatientId", *FINDINGS]
    assert {"View", "Age", "Sex"} <= set(full_metadata.columns)


def test_nih_sample_matches_readme_counts():
    table = load_labels(NIH / "sample_labels.csv", images_dir=IMAGES)
    assert len(table) == 549
    expected = {"Infiltration": 112, "Atelectasis": 85, "Nodule": 81, "Hernia": 18, "Edema": 15}
    assert {f: int(table[f].sum()) for f in expected} == expected
    assert int((table[list(FINDINGS)].sum(axis=1) == 0).sum()) == 91  # "No Finding"


def test_multi_label_row_is_parsed(full_metadata):
    row = full_metadata.set_index("Image").loc["00000001_001.png"]
    assert row["Cardiomegaly"] == 1 and row["Emphysema"] == 1
    assert row[list(FINDINGS)].sum() == 2


def test_course_and_nih_formats_agree_on_the_same_images():
    course = load_labels(NIH / "test.csv")
    nih = load_labels(NIH / "sample_labels.csv").set_index("Image").loc[course["Image"]].reset_index()
    pd.testing.assert_frame_equal(course[["Image", "PatientId", *FINDINGS]], nih[["Image", "PatientId", *FINDINGS]])


def test_plain_and_gzipped_csv_read_the_same(tmp_path):
    source = NIH / "sample_labels.csv"
    packed = tmp_path / "labels.csv.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    pd.testing.assert_frame_equal(load_labels(source), load_labels(packed))


def _course_frame() -> pd.DataFrame:
    return pd.read_csv(NIH / "valid-small.csv")


def _error(source, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_labels(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_column_names_it(tmp_path):
    path = tmp_path / "labels.csv"
    _course_frame().drop(columns="Hernia").to_csv(path, index=False)
    message = _error(path)
    assert "labels.csv" in message and "'Hernia'" in message and "missing column" in message


def test_unknown_finding_names_row_and_value(tmp_path):
    raw = pd.read_csv(NIH / "sample_labels.csv").head(5)
    raw.loc[3, "Finding Labels"] = "Effusion|Covid"
    path = tmp_path / "entry.csv"
    raw.to_csv(path, index=False)
    message = _error(path)
    assert "row 5" in message and "'Covid'" in message


def test_non_binary_label_names_column_and_row(tmp_path):
    frame = _course_frame()
    frame.loc[6, "Edema"] = 2
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    message = _error(path)
    assert "'Edema'" in message and "row 8" in message and "0 or 1" in message
    assert "value 2;" in message and "np." not in message


def test_duplicate_image_names_both_rows(tmp_path):
    frame = _course_frame()
    frame.loc[4, "Image"] = frame.loc[1, "Image"]
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    message = _error(path)
    assert frame.loc[1, "Image"] in message and "rows 3, 6" in message


def test_image_missing_from_folder(tmp_path):
    frame = _course_frame()
    frame.loc[0, "Image"] = "99999999_000.png"
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    message = _error(path, images_dir=IMAGES)
    assert "1 of 55" in message and "99999999_000.png" in message and "`images_dir`" in message  # CLI: --images


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "file not found"), ("", "empty"), ("name,age\nx,1\n", "not a label file")],
)
def test_unreadable_files(tmp_path, content, expected):
    path = tmp_path / "labels.csv"
    if content is not None:
        path.write_text(content)
    assert expected in _error(path)


def test_class_freqs_against_hand_computed_values():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]])
    pos, neg = compute_class_freqs(labels)
    np.testing.assert_allclose(pos, [0.75, 0.5, 0.0])
    np.testing.assert_allclose(neg, [0.25, 0.5, 1.0])
    # with w_pos = freq_neg and w_neg = freq_pos, positive and negative contributions are equal
    np.testing.assert_allclose(pos * neg, neg * pos)


def test_class_freqs_from_table_on_training_file():
    table = load_labels(NIH / "train-small.csv")
    pos, neg = compute_class_freqs(table)
    assert pos[FINDINGS.index("Infiltration")] == pytest.approx(table["Infiltration"].mean())
    np.testing.assert_allclose(pos + neg, 1.0)


def test_written_split_reloads_identically(tmp_path):
    table = load_labels(NIH / "sample_labels.csv")
    parts = {"train": table.iloc[:300], "valid": table.iloc[300:400], "test": table.iloc[400:]}
    paths = write_splits(parts, tmp_path, ["a.csv", "b.csv", "c.csv"])
    again = load_labels(paths["valid"])
    assert again["Image"].tolist() == parts["valid"]["Image"].tolist()
    assert (again[list(FINDINGS)].to_numpy() == parts["valid"][list(FINDINGS)].to_numpy()).all()



@pytest.mark.parametrize("fmt", ["course", "nih"])
def test_patient_id_na_is_an_id_and_only_an_empty_cell_is_missing(tmp_path, fmt):
    if fmt == "course":
        frame, column = _course_frame(), "PatientId"
    else:
        frame, column = pd.read_csv(NIH / "sample_labels.csv").head(5), "Patient ID"
    frame[column] = frame[column].astype(object)
    frame.loc[0, column], frame.loc[1, column] = "NA", "null"
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    table = load_labels(path)
    assert list(table["PatientId"][:2]) == ["NA", "null"]
    with gzip.open(tmp_path / "labels.csv.gz", "wb") as handle:
        handle.write(path.read_bytes())
    assert list(load_labels(tmp_path / "labels.csv.gz")["PatientId"][:2]) == ["NA", "null"]
    frame.loc[2, column] = ""
    frame.to_csv(path, index=False)
    assert "row 4 is empty" in _error(path)
