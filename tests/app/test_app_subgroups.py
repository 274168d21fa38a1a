"""The Subgroups view of the Model performance page, in Streamlit's AppTest, on the shipped demo evaluations."""

from __future__ import annotations

import shutil

from conftest import REPO
from test_app import open_page, start_app, text, widget

from pipeline.evaluation import results

RUNS = REPO / "artifacts" / "runs"
DEMO = RUNS / "densenet121-128-weighted" / "eval-test"

def performance(monkeypatch, artifacts=None):
    return open_page(start_app(monkeypatch, artifacts), "performance")


def subgroup_table(at, first_column="Subgroup", contains=None):
    tables = [d.value for d in at.dataframe if first_column in d.value.columns]
    return [t for t in tables if contains is None or contains in t.columns]


def test_subgroups_view_renders_the_shipped_audit_with_its_honesty(monkeypatch):
    at = performance(monkeypatch)
    audit = results.read_subgroups(DEMO)
    body = text(at)
    assert "Only 55 images: far too few for conclusions about subgroups" in body
    assert "55 images of `nih/test.csv`" in body and "too few" in body
    assert "none of the 14 probabilities reaches its finding's operating threshold" in body
    [table] = subgroup_table(at, contains="Underdiagnosis (95% CI)")
    assert len(table) == len(audit.groups)
    female = table.set_index("Subgroup").loc["sex: female"]
    assert female["Images"] == audit.group("sex", "female").n_images
    assert female["Abnormal"] == audit.group("sex", "female").n_abnormal
    assert table["Underdiagnosis (95% CI)"].str.startswith("too few").any()  # the small-group rule shows
    charts = len(at.get("plotly_chart"))

    widget(at.selectbox, "Finding").set_value("Infiltration").run()
    assert not at.exception
    [per_finding] = subgroup_table(at, contains="AUC (95% CI)")
    assert per_finding.set_index("Subgroup").loc["sex: male", "Positives"] == (
        audit.group("sex", "male").findings["Infiltration"].n_positive)
    assert len(at.get("plotly_chart")) >= charts  # the AUC forest plot joins the gaps' one
    radio = next(r for r in at.radio if r.label == "Gaps in")
    radio.set_value("sensitivity").run()
    assert not at.exception and not at.error


def test_an_evaluation_without_an_audit_says_how_to_get_one(monkeypatch, tmp_path):
    copy = tmp_path / "runs" / "demo" / "eval-test"
    shutil.copytree(RUNS / "densenet121-128-plain" / "eval-test", copy)
    for name in results.SUBGROUP_FILES:
        (copy / name).unlink()
    at = performance(monkeypatch, tmp_path)
    assert "has no subgroup audit" in text(at)
    assert not at.exception
