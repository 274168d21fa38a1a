"""Leakage checks, the patient-wise split and the audit of the official NIH split."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import NIH

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data.label_files import load_labels
from pipeline.data.leakage import audit_official_split, check_all_pairs, check_for_leakage, leakage_report, split


@pytest.fixture(scope="module")
def sample():
    return load_labels(NIH / "sample_labels.csv")


def test_committed_splits_do_not_leak():
    tables = {name: load_labels(NIH / name) for name in ("train-small.csv", "valid-small.csv", "test.csv")}
    assert not any(report.leaks for report in check_all_pairs(tables))
    assert sum(len(t) for t in tables.values()) == 549


def test_course_examples():
    df1 = pd.DataFrame({"patient_id": [0, 1, 2]})
    df2 = pd.DataFrame({"patient_id": [2, 3, 4]})
    assert check_for_leakage(df1, df2, "patient_id") is True
    df3 = pd.DataFrame({"patient_id": [5, 6, 7]})
    assert check_for_leakage(df1, df3, "patient_id") is False


def test_crafted_overlap_is_reported_with_patients_and_images(full_metadata):
    train = full_metadata[full_metadata["PatientId"].isin(["1", "2", "3"])]
    test = full_metadata[full_metadata["PatientId"].isin(["3", "4"])].copy()
    report = leakage_report(train, test, names=("train", "test"))
    assert report.leaks and report.patients == ["3"]
    n_images_of_3 = int((full_metadata["PatientId"] == "3").sum())
    assert len(report.images_a) == len(report.images_b) == n_images_of_3
    assert report.to_dict()["n_patients"] == 1


def test_leakage_needs_patient_column():
    with pytest.raises(InputError, match="PatientId"):
        leakage_report(pd.DataFrame({"Image": ["a"]}), pd.DataFrame({"PatientId": ["1"]}))


def test_split_is_patient_disjoint_on_multi_image_patients(full_metadata):
    # 2,000 patients with their follow-ups: a split by image would leak, ours must not
    patients = full_metadata["PatientId"].drop_duplicates().iloc[:2000]
    table = full_metadata[full_metadata["PatientId"].isin(patients)].reset_index(drop=True)
    parts = split(table, valid=0.1, test=0.2, seed=3)
    assert not any(r.leaks for r in check_all_pairs(parts))
    assert sum(len(p) for p in parts.values()) == len(table)
    shares = [len(parts[k]) / len(table) for k in ("train", "valid", "test")]
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.03)


def test_split_is_reproducible_and_seed_dependent(sample):
    first = split(sample, seed=7)
    again = split(sample, seed=7)
    other = split(sample, seed=8)
    assert all(first[k]["Image"].tolist() == again[k]["Image"].tolist() for k in first)
    assert first["test"]["Image"].tolist() != other["test"]["Image"].tolist()


def test_split_is_stratified(sample):
    parts = split(sample, valid=0.1, test=0.1, seed=0)
    total = sample[list(FINDINGS)].sum()
    for name, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        counts = parts[name][list(FINDINGS)].sum()
        assert (counts > 0).all(), f"{name} lacks a finding"
        # every finding within 2 images (or 20%) of its proportional share
        assert ((counts - share * total).abs() <= (0.2 * share * total).clip(lower=2)).all()


def test_split_rejects_bad_shares(sample):
    with pytest.raises(InputError, match="shares"):
        split(sample, valid=0.6, test=0.5)


def test_audit_official_split_is_disjoint_and_naive_split_leaks():
    report = audit_official_split(
        NIH / "metadata" / "Data_Entry_2017_v2020.csv.gz",
        NIH / "metadata" / "train_val_list.txt.gz",
        NIH / "metadata" / "test_list.txt.gz",
    )
    assert report["n_images"] == 112_120 and report["unlisted_images"] == 0
    assert report["official"]["train_images"] == 86_524 and report["official"]["test_images"] == 25_596
    assert report["official"]["shared_patients"] == 0
    assert report["naive"]["test_images"] == 25_596
    assert report["naive"]["test_images_affected_share"] > 0.5
