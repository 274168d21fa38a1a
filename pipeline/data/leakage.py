"""Patient leakage: checking splits, making leak-free splits, and auditing the official NIH split.

A patient whose images sit on both sides of a split lets a model score well by recognising the
patient rather than the disease, so every split in this project is made, and checked, by patient.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS


def check_for_leakage(df1: pd.DataFrame, df2: pd.DataFrame, patient_col: str = "PatientId") -> bool:
    """True when any patient of ``df1`` is also in ``df2`` (the course's definition)."""
    return leakage_report(df1, df2, patient_col=patient_col).leaks


@dataclass
class LeakageReport:
    """What two label tables share: the patients, and the images of those patients on each side."""

    name_a: str
    name_b: str
    patients: list[str] = field(default_factory=list)
    images_a: list[str] = field(default_factory=list)
    images_b: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> bool:
        return bool(self.patients)

    def to_dict(self) -> dict:
        return {
            "a": self.name_a,
            "b": self.name_b,
            "leakage": self.leaks,
            "n_patients": len(self.patients),
            "n_images_a": len(self.images_a),
            "n_images_b": len(self.images_b),
            "patients": self.patients,
            "images_a": self.images_a,
            "images_b": self.images_b,
        }


def leakage_report(
    df1: pd.DataFrame,
    df2: pd.DataFrame,
    patient_col: str = "PatientId",
    image_col: str = "Image",
    names: tuple[str, str] = ("a", "b"),
) -> LeakageReport:
    """Patients shared by two tables, with the images each side holds of them."""
    for frame, name in zip((df1, df2), names, strict=True):
        if patient_col not in frame.columns:
            raise InputError(f"{name}: no {patient_col!r} column; leakage is checked by patient id")
    a, b = df1[patient_col].astype(str), df2[patient_col].astype(str)
    shared = np.intersect1d(a.unique(), b.unique())
    report = LeakageReport(names[0], names[1], patients=sorted(shared.tolist()))
    if report.leaks and image_col in df1.columns and image_col in df2.columns:
        report.images_a = sorted(df1.loc[a.isin(shared), image_col].astype(str))
        report.images_b = sorted(df2.loc[b.isin(shared), image_col].astype(str))
    return report


def check_all_pairs(tables: dict[str, pd.DataFrame]) -> list[LeakageReport]:
    """One report for every pair of named tables."""
    if len(tables) < 2:
        raise InputError("leakage needs two or more label files to compare")
    return [
        leakage_report(tables[a], tables[b], names=(a, b)) for a, b in combinations(tables, 2)
    ]


def format_reports(reports: list[LeakageReport]) -> str:
    """A plain-text table of leaking pairs: pair, shared patients, images on each side."""
    rows = [("pair", "patients", "images in A", "images in B")]
    rows += [
        (f"{r.name_a} <-> {r.name_b}", str(len(r.patients)), str(len(r.images_a)), str(len(r.images_b)))
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    example = reports[0]
    lines.append(f"LEAKAGE: e.g. patient {example.patients[0]} is in both {example.name_a} and {example.name_b}")
    return "\n".join(lines)


def split(
    table: pd.DataFrame,
    valid: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    test_list: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Split by patient into train/valid/test, stratified over the 14 findings.

    Iterative stratification (Sechidis et al., 2011) at patient level: the rarest finding is placed
    first, each of its patients going to the part that still needs most of it; patients with no finding
    fill the parts up to their image quota. Same table and seed, same split.

    With ``test_list`` (a file of image names, e.g. the NIH ``test_list.txt.gz``) the test part is exactly
    those images, ``test`` is ignored, and the rest is split into train and valid (``valid`` a share of it).
    """
    if test_list is not None:
        return _split_with_test_list(table, valid, seed, test_list)
    if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
        raise InputError(f"`valid` {valid} and `test` {test}: give shares between 0 and 1 that sum to less than 1")
    return _split(table, np.array([1 - valid - test, valid, test]), seed)


def _split_with_test_list(
    table: pd.DataFrame, valid: float, seed: int, test_list: str | Path
) -> dict[str, pd.DataFrame]:
    if not 0 < valid < 1:
        raise InputError(f"`valid` {valid}: give a share between 0 and 1")
    listed = set(_read_list(Path(test_list)))
    in_test = table["Image"].isin(listed)
    if not in_test.any():
        raise InputError(f"{Path(test_list).name}: none of its images is in the label file; check `test_list`")
    test, rest = table[in_test].reset_index(drop=True), table[~in_test].reset_index(drop=True)
    shared = set(test["PatientId"]) & set(rest["PatientId"])
    if shared:
        raise InputError(
            f"{Path(test_list).name}: {len(shared)} patients have images both in and outside the list "
            "(it is not patient-wise); use the official NIH test list, or split without `test_list`"
        )
    parts = _split(rest, np.array([1 - valid, valid, 0.0]), seed)
    return {"train": parts["train"], "valid": parts["valid"], "test": test}


def _split(table: pd.DataFrame, shares: np.ndarray, seed: int) -> dict[str, pd.DataFrame]:
    """Patients to parts in proportion to ``shares`` (train, valid, test); a part with share 0 stays empty."""
    open_parts = [p for p in range(3) if shares[p] > 0]
    per_patient = table.groupby("PatientId", sort=True)[list(FINDINGS)].sum()
    per_patient["n_images"] = table.groupby("PatientId", sort=True).size()
    if len(per_patient) < 3:
        raise InputError(f"only {len(per_patient)} patients: a patient-wise split needs at least 3")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(per_patient))
    counts = per_patient[list(FINDINGS)].to_numpy()[order]
    sizes = per_patient["n_images"].to_numpy()[order]
    patients = per_patient.index.to_numpy()[order]

    need = shares[:, None] * counts.sum(axis=0)[None, :]  # positives each part still wants, per finding
    room = shares * sizes.sum()  # images each part still wants
    part_of = np.full(len(patients), -1)
    unassigned = np.ones(len(patients), dtype=bool)
    while True:
        remaining = counts[unassigned].sum(axis=0)
        if not remaining.any():
            break
        finding = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        for i in np.flatnonzero(unassigned & (counts[:, finding] > 0)):
            # the part that needs this finding most; ties go to the part with most room left
            target = max(open_parts, key=lambda p: (need[p, finding], room[p]))
            part_of[i] = target
            unassigned[i] = False
            need[target] -= counts[i]
            room[target] -= sizes[i]
    for i in np.flatnonzero(unassigned):
        target = max(open_parts, key=lambda p: room[p])
        part_of[i] = target
        room[target] -= sizes[i]

    parts = {}
    for index, name in enumerate(("train", "valid", "test")):
        chosen = set(patients[part_of == index])
        parts[name] = table[table["PatientId"].isin(chosen)].reset_index(drop=True)
        if parts[name].empty and shares[index] > 0:
            raise InputError(f"the {name} part came out empty; give more patients or larger shares")
    for a, b in combinations(parts, 2):
        if check_for_leakage(parts[a], parts[b]):  # by construction this never happens; refuse if it does
            raise InputError(f"refusing to write a leaking split: {a} and {b} share patients")
    return parts


def _read_list(path: Path) -> list[str]:
    if not Path(path).is_file():
        raise InputError(f"{path}: split list not found; give the NIH train_val_list / test_list (.txt or .txt.gz)")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line.strip() for line in handle if line.strip()]


def audit_official_split(
    metadata: str | Path, train_val_list: str | Path, test_list: str | Path, seed: int = 0
) -> dict:
    """Compare the official patient-wise NIH split with a naive image-level random split of the same size.

    Returns counts for both: images and patients per side, patients on both sides, and the share of test
    patients (and test images) whose patient also appears in training.
    """
    from pipeline.data.label_files import load_labels

    table = load_labels(metadata)
    train_names, test_names = set(_read_list(Path(train_val_list))), set(_read_list(Path(test_list)))
    is_test = table["Image"].isin(test_names).to_numpy()
    is_train = table["Image"].isin(train_names).to_numpy()
    official = _split_leakage(table, is_train, is_test)
    naive_test = np.zeros(len(table), dtype=bool)
    naive_test[np.random.default_rng(seed).choice(len(table), size=int(is_test.sum()), replace=False)] = True
    naive = _split_leakage(table, ~naive_test, naive_test)
    return {
        "metadata": Path(metadata).name,
        "n_images": len(table),
        "n_patients": int(table["PatientId"].nunique()),
        "unlisted_images": int((~is_train & ~is_test).sum()),
        "official": official,
        "naive": naive,
        "seed": seed,
    }


def _split_leakage(table: pd.DataFrame, is_train: np.ndarray, is_test: np.ndarray) -> dict:
    train_patients = set(table.loc[is_train, "PatientId"])
    test = table.loc[is_test]
    test_patients = set(test["PatientId"])
    shared = train_patients & test_patients
    affected = int(test["PatientId"].isin(shared).sum())
    return {
        "train_images": int(is_train.sum()),
        "test_images": int(is_test.sum()),
        "train_patients": len(train_patients),
        "test_patients": len(test_patients),
        "shared_patients": len(shared),
        "test_patients_in_train": len(shared) / max(len(test_patients), 1),
        "test_images_affected": affected,
        "test_images_affected_share": affected / max(len(test), 1),
    }


def format_audit(report: dict) -> str:
    """The audit as a short, readable text."""
    lines = [f"{report['metadata']}: {report['n_images']:,} images of {report['n_patients']:,} patients", ""]
    for key, title in (("official", "official NIH split (by patient)"), ("naive", "naive random split by image")):
        s = report[key]
        lines += [
            f"{title}: {s['train_images']:,} train / {s['test_images']:,} test images",
            f"  patients in both: {s['shared_patients']:,} "
            f"({s['test_patients_in_train']:.1%} of {s['test_patients']:,} test patients)",
            f"  test images whose patient is also in train: {s['test_images_affected']:,} "
            f"({s['test_images_affected_share']:.1%})",
        ]
    verdict = "patient-disjoint" if report["official"]["shared_patients"] == 0 else "LEAKS"
    lines += ["", f"verdict: the official split is {verdict}; the naive split leaks "
              f"{report['naive']['test_images_affected_share']:.0%} of its test images"]
    return "\n".join(lines)
