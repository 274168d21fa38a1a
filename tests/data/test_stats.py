"""Dataset statistics against known truths of the NIH metadata and hand-made tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.findings import FINDINGS
from pipeline.data.stats import format_summary, summarize


def test_full_metadata_known_truths(full_metadata):
    summary = summarize(full_metadata)
    assert summary["n_images"] == 112_120
    assert summary["n_patients"] == 30_805
    assert summary["prevalence"]["Infiltration"]["count"] == 19_894
    assert summary["prevalence"]["Hernia"]["count"] == 227
    assert summary["no_finding"]["count"] == 60_361
    assert sum(summary["findings_per_image"].values()) == 112_120
    assert sum(summary["sex"].values()) == 112_120 and set(summary["view"]) == {"PA", "AP"}
    json.dumps(summary)  # the --json output must be serialisable


def test_cooccurrence_diagonal_is_prevalence_and_symmetric(full_metadata):
    matrix = np.array(summarize(full_metadata)["cooccurrence"])
    assert matrix.shape == (14, 14)
    assert (matrix == matrix.T).all()
    assert matrix[FINDINGS.index("Hernia"), FINDINGS.index("Hernia")] == 227


def test_small_table_by_hand():
    rows = [
        {"Image": "a", "PatientId": "1", "Age": 30, "Sex": "F", "View": "PA", "Effusion": 1, "Edema": 1},
        {"Image": "b", "PatientId": "1", "Age": 31, "Sex": "F", "View": "AP", "Effusion": 1},
        {"Image": "c", "PatientId": "2", "Age": 70, "Sex": "M", "View": "PA"},
    ]
    table = pd.DataFrame(rows, columns=["Image", "PatientId", *FINDINGS, "Age", "Sex", "View"]).fillna(0)
    summary = summarize(table)
    assert summary["n_patients"] == 2
    assert summary["images_per_patient"]["histogram"] == {"1": 1, "2": 1}
    assert summary["prevalence"]["Effusion"] == {"count": 2, "percent": pytest.approx(200 / 3)}
    assert summary["findings_per_image"] == {"0": 1, "1": 1, "2": 1}
    assert summary["cooccurrence"][FINDINGS.index("Edema")][FINDINGS.index("Effusion")] == 1
    assert summary["age"]["bins"]["30-39"] == 2 and summary["age"]["bins"]["70-79"] == 1
    text = format_summary(summary)
    assert "images: 3" in text
    assert "most frequent pair: Edema + Effusion (1 images" in text
