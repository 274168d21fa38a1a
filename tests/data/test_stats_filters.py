"""What the dashboard adds to stats and data: filters, the loss contributions of the weighted loss, uploads."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import NIH

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS, NO_FINDING
from pipeline.data import label_files, stats


@pytest.fixture(scope="module")
def sample():
    return label_files.load_labels(NIH / "sample_labels.csv")


def test_filters_on_the_full_metadata(full_metadata):
    assert len(stats.filter_table(full_metadata)) == 112_120  # no filter, no change
    assert len(stats.filter_table(full_metadata, findings=["Hernia"])) == 227
    assert len(stats.filter_table(full_metadata, findings=[NO_FINDING])) == 60_361
    assert len(stats.filter_table(full_metadata, views=["PA"])) == 67_310
    assert len(stats.filter_table(full_metadata, sexes=["F"])) == 48_780


def test_filters_combine_with_and_and_findings_with_or(sample):
    hernia = stats.filter_table(sample, findings=["Hernia"])
    edema = stats.filter_table(sample, findings=["Edema"])
    either = stats.filter_table(sample, findings=["Hernia", "Edema"])
    both = ((sample["Hernia"] == 1) & (sample["Edema"] == 1)).sum()
    assert len(hernia) == 18 and len(edema) == 15 and len(either) == 18 + 15 - both
    women = stats.filter_table(sample, findings=["Hernia"], sexes=["F"])
    assert set(women["Sex"]) == {"F"} and (women["Hernia"] == 1).all() and 0 < len(women) < 18
    adults = stats.filter_table(sample, age_range=(18, 65))
    assert adults["Age"].between(18, 65).all()
    assert len(adults) == sample["Age"].between(18, 65).sum()


def test_filter_refuses_unknown_findings_and_missing_columns():
    course = label_files.load_labels(NIH / "test.csv")  # course format: no View, Sex or Age
    with pytest.raises(InputError, match="unknown finding 'Tumour'"):
        stats.filter_table(course, findings=["Tumour"])
    with pytest.raises(InputError, match="no 'View' column"):
        stats.filter_table(course, views=["PA"])
    assert len(stats.filter_table(course, findings=["Mass"])) == 5


def test_loss_contributions_as_the_course_defines_them(sample):
    table = stats.loss_contributions(sample)
    assert list(table.index) == list(FINDINGS)
    freq_pos = sample[list(FINDINGS)].mean().to_numpy()
    np.testing.assert_allclose(table["pos_before"], freq_pos)
    np.testing.assert_allclose(table["neg_before"], 1 - freq_pos)
    np.testing.assert_allclose(table["pos_after"], freq_pos * (1 - freq_pos))
    np.testing.assert_allclose(table["pos_after"], table["neg_after"])  # weighting balances them exactly


def test_loss_contributions_by_hand():
    rows = [dict.fromkeys(FINDINGS, 0) for _ in range(4)]
    rows[0]["Mass"] = 1
    table = pd.DataFrame(rows).assign(Image=list("abcd"), PatientId=list("1234"))
    mass = stats.loss_contributions(table).loc["Mass"]
    assert (mass["pos_before"], mass["neg_before"]) == (0.25, 0.75)
    assert mass["pos_after"] == mass["neg_after"] == pytest.approx(0.1875)


def test_load_labels_bytes_plain_gzipped_and_bad():
    content = (NIH / "test.csv").read_bytes()
    assert len(label_files.load_labels_bytes(content, "test.csv")) == 55
    assert len(label_files.load_labels_bytes(gzip.compress(content), "test.csv.gz")) == 55
    for bad, reason in ((b"", "empty"), (b"a,b\n1,2\n", "not a label file"), (b"\x89PNG\r\n\x00\xff", "CSV")):
        with pytest.raises(InputError, match=reason) as error:
            label_files.load_labels_bytes(bad, "upload.csv")
        assert str(error.value).startswith("upload.csv:") and "\n" not in str(error.value)
