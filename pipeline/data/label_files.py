"""Label files in, one canonical table out.

Two formats are read, plain or gzipped:

- the NIH ``Data_Entry_2017`` CSV (``Image Index``, ``Finding Labels`` separated by ``|``, ``Patient ID``,
  ``Patient Age``, ``Patient Gender``, ``View Position``, ...);
- the course's one-hot CSV (``Image``, the 14 findings as 0/1, ``PatientId``).

Both become the canonical table: ``Image``, ``PatientId``, the 14 findings as 0/1 in the order of
`pipeline.core.findings.FINDINGS`, and ``View``, ``Age``, ``Sex`` where the file has them. Every problem is an
`InputError` whose one line names the file, the column or row, and the fix.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # pandas' own missing-value words, kept for every other column

from pipeline.core.errors import InputError, reason
from pipeline.core.files import write_csv_atomic
from pipeline.core.findings import FINDINGS, NO_FINDING

NIH_COLUMNS = {"Image Index": "Image", "Patient ID": "PatientId"}
PATIENT_COLUMNS = ("Patient ID", "PatientId")
NIH_OPTIONAL = {"View Position": "View", "Patient Age": "Age", "Patient Gender": "Sex"}
COURSE_REQUIRED = ("Image", *FINDINGS, "PatientId")
OPTIONAL = ("View", "Age", "Sex")


def load_labels(source: str | Path | pd.DataFrame, images_dir: str | Path | None = None) -> pd.DataFrame:
    """Read a label file in either format into the canonical table.

    Parameters
    ----------
    source
        Path to a CSV (``.csv`` or ``.csv.gz``), or an already-read DataFrame (e.g. an upload).
    images_dir
        When given, every listed image must exist in this folder.

    Returns
    -------
    pandas.DataFrame
        ``Image``, ``PatientId``, the 14 findings (int8 0/1), then ``View``, ``Age``, ``Sex`` if present.
    """
    name = "table" if isinstance(source, pd.DataFrame) else Path(source).name
    raw = source.reset_index(drop=True) if isinstance(source, pd.DataFrame) else read_csv(Path(source))
    raw.columns = [str(c).strip() for c in raw.columns]
    if "Finding Labels" in raw.columns or "Image Index" in raw.columns:
        table = _from_nih(raw, name)
    elif "Image" in raw.columns:
        table = _from_course(raw, name)
    else:
        raise InputError(
            f"{name}: not a label file (no 'Image Index'/'Finding Labels' or 'Image' column); "
            "give an NIH Data_Entry CSV or a course CSV with Image, the 14 findings and PatientId"
        )
    _check_unique_images(table, name)
    if images_dir is not None:
        check_images_exist(table, images_dir, name)
    return table


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV (plain or gzipped) as it is, with one-line errors for missing, empty or unreadable files."""
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    try:
        return _parse_csv(lambda: path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name}: the file is empty; give a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{path.name}: cannot be read as CSV ({reason(exc)}); give a plain or gzipped CSV") from None


def _parse_csv(source: Callable[[], Any], **options: Any) -> pd.DataFrame:
    """`pandas.read_csv` of ``source()`` with pandas' usual missing-value words everywhere except in patient ids.

    ``NA``, ``null`` or ``None`` are ids like any other (only an empty cell is a missing id); the header is
    read first to name the columns, since pandas takes per-column missing values only by name.
    """
    header = pd.read_csv(source(), nrows=0, **options).columns
    missing = {column: [""] if column in PATIENT_COLUMNS else sorted(STR_NA_VALUES) for column in header}
    return pd.read_csv(source(), dtype={"Image": str, "Image Index": str}, low_memory=False, keep_default_na=False,
                       na_values=missing, **options)


def _require(raw: pd.DataFrame, columns: tuple[str, ...] | list[str], name: str, kind: str) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        listed = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{name}: missing column {listed}; {kind}")


def _from_nih(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    _require(
        raw,
        ["Image Index", "Finding Labels", "Patient ID"],
        name,
        "an NIH Data_Entry CSV needs 'Image Index', 'Finding Labels' and 'Patient ID'",
    )
    labels = raw["Finding Labels"].fillna("").astype(str)
    tokens = labels.str.split("|").explode().str.strip()
    tokens = tokens[(tokens != "") & (tokens != NO_FINDING)]
    unknown = tokens[~tokens.isin(FINDINGS)]
    if len(unknown):
        row = int(unknown.index[0])
        raise InputError(
            f"{name}: row {row + 2} has unknown finding {unknown.iloc[0]!r} in 'Finding Labels'; "
            f"use the NIH names ({', '.join(FINDINGS)}) or 'No Finding'"
        )
    onehot = np.zeros((len(raw), len(FINDINGS)), dtype=np.int8)
    column_of = {f: i for i, f in enumerate(FINDINGS)}
    onehot[tokens.index.to_numpy(), tokens.map(column_of).to_numpy()] = 1
    table = pd.DataFrame(onehot, columns=list(FINDINGS))
    table.insert(0, "Image", raw["Image Index"].astype(str).str.strip().to_numpy())
    table.insert(1, "PatientId", _patient_ids(raw["Patient ID"], name, "Patient ID"))
    for source, target in NIH_OPTIONAL.items():
        if source in raw.columns:
            table[target] = raw[source].to_numpy()
    return table


def _from_course(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    _require(raw, COURSE_REQUIRED, name, "a course label file needs Image, the 14 findings and PatientId")
    table = pd.DataFrame({"Image": raw["Image"].astype(str).str.strip()})
    table["PatientId"] = _patient_ids(raw["PatientId"], name, "PatientId")
    for finding in FINDINGS:
        values = pd.to_numeric(raw[finding], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = raw[finding].iloc[row]
            value = value.item() if isinstance(value, np.generic) else value  # 2, not np.int64(2)
            raise InputError(f"{name}: column {finding!r} row {row + 2} has value {value!r}; labels must be 0 or 1")
        table[finding] = values.astype(np.int8).to_numpy()
    for column in OPTIONAL:
        if column in raw.columns:
            table[column] = raw[column].to_numpy()
    return table


def _patient_ids(column: pd.Series, name: str, label: str) -> np.ndarray:
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise InputError(f"{name}: column {label!r} row {row + 2} is empty; every image needs a patient id")
    return column.astype(str).str.strip().str.removesuffix(".0").to_numpy()


def _check_unique_images(table: pd.DataFrame, name: str) -> None:
    duplicated = table["Image"].duplicated(keep=False)
    if duplicated.any():
        image = table.loc[duplicated, "Image"].iloc[0]
        rows = [int(i) + 2 for i in np.flatnonzero((table["Image"] == image).to_numpy())]
        raise InputError(
            f"{name}: image {image!r} is listed more than once (rows {', '.join(map(str, rows))}); "
            "remove the duplicates"
        )


def check_images_exist(table: pd.DataFrame, images_dir: str | Path, name: str = "labels") -> None:
    """Raise `InputError` unless every image of ``table`` is a file in ``images_dir``."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found; check `images_dir`")
    present = set(os.listdir(folder))
    missing = [image for image in table["Image"] if image not in present]
    if missing:
        first = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(
            f"{name}: {len(missing)} of {len(table)} listed images are not in {folder} ({first}); "
            "check `images_dir` or remove those rows"
        )


def label_matrix(table: pd.DataFrame) -> np.ndarray:
    """The (n, 14) 0/1 label matrix of a canonical table, in `FINDINGS` order."""
    return table[list(FINDINGS)].to_numpy(dtype=np.float64)


def compute_class_freqs(labels: np.ndarray | pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative frequency of each finding, as the course defines them.

    ``freq_pos[i]`` is the share of images labelled with finding ``i`` and ``freq_neg = 1 - freq_pos``.
    The weighted loss uses ``w_pos = freq_neg`` and ``w_neg = freq_pos`` so that, summed over the
    training set, each finding's positive and negative cases contribute equally.
    """
    matrix = label_matrix(labels) if isinstance(labels, pd.DataFrame) else np.asarray(labels, dtype=np.float64)
    if matrix.ndim != 2 or len(matrix) == 0:
        raise InputError("class frequencies need a non-empty (images x findings) label matrix")
    freq_pos = matrix.mean(axis=0)
    return freq_pos, 1.0 - freq_pos


def class_weights(labels: np.ndarray | pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(w_pos, w_neg) = (freq_neg, freq_pos)``: the course's weights, written here once for the loss and the app.

    ``labels`` is an (images x findings) 0/1 matrix or the canonical label table of `load_labels`.
    """
    freq_pos, freq_neg = compute_class_freqs(labels)
    return freq_neg, freq_pos


def to_course_format(table: pd.DataFrame) -> pd.DataFrame:
    """The canonical table as the course CSV: ``Image``, the 14 findings, ``PatientId``."""
    return table[["Image", *FINDINGS, "PatientId"]]


def write_splits(parts: dict[str, pd.DataFrame], out_dir: str | Path, names: list[str]) -> dict[str, Path]:
    """Write ``{"train", "valid", "test"}`` tables in course format under the given file names."""
    return {
        part: write_csv_atomic(to_course_format(parts[part]), Path(out_dir) / file)
        for part, file in zip(("train", "valid", "test"), names, strict=True)
    }


def load_labels_bytes(content: bytes, name: str) -> pd.DataFrame:
    """`load_labels` of a label file's bytes, plain or gzipped (an upload: never written to disk).

    ``name`` is the file's name, used in the one-line `InputError` messages.
    """
    if not content:
        raise InputError(f"{name}: the file is empty; give a CSV with a header row")
    compression = "gzip" if content[:2] == b"\x1f\x8b" else None
    try:
        raw = _parse_csv(lambda: io.BytesIO(content), compression=compression)
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}: the file is empty; give a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{name}: cannot be read as CSV ({reason(exc)}); give a plain or gzipped CSV") from None
    try:
        return load_labels(raw)
    except InputError as exc:  # load_labels calls a DataFrame "table"; say which file it was
        raise InputError(str(exc).replace("table:", f"{name}:", 1)) from None
