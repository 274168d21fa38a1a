"""Dashboard details a first-time user hit: the picker beside an upload, the batch table, the Grad-CAM row,
probability labels against threshold ticks, and the images-per-patient axis on the full metadata."""

from __future__ import annotations

import json

import numpy as np
from conftest import IMAGES, TEST_DATA
from test_app import app, artifacts, open_page, text, widget  # noqa: F401 (fixtures)

from pipeline.core.findings import FINDINGS

XRAY = (TEST_DATA / "00000001_000.png").read_bytes()


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_the_picker_says_it_is_unused_while_files_are_uploaded(app):  # noqa: F811
    open_page(app, "predict")
    assert not widget(app.selectbox, "Or pick an image").disabled
    app.file_uploader[0].set_value(("upload.png", XRAY, "image/png")).run()
    assert widget(app.selectbox, "Or pick an image").disabled
    assert "Showing the uploaded files; the picker is used when no file is uploaded." in text(app)
    app.file_uploader[0].set_value(None).run()
    assert not widget(app.selectbox, "Or pick an image").disabled


def batch(at, files):
    open_page(at, "predict")
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    return at.dataframe[0].value


def test_batch_table_findings_first_reason_last_and_no_none(app):  # noqa: F811
    import cv2

    ok, flat = cv2.imencode(".png", np.full((300, 300), 120, np.uint8))
    files = [("a.png", XRAY, "image/png"), ("flat.png", flat.tobytes(), "image/png"),
             ("broken.png", XRAY[:300], "image/png")]
    table = batch(app, files)
    columns = list(table.columns)
    assert columns[:2] == ["File", "Status"] and columns[2:16] == list(FINDINGS)
    assert columns[-2:] == ["Typicality", "Reason"]  # the long reasons come after every finding
    # the grid prints a missing value as "None": every cell is text, empty where nothing applies
    assert table.map(lambda value: isinstance(value, str)).all().all()
    assert (table["Typicality"] == "").all()  # this run has no typicality statistics: empty, not "None"
    assert (table.loc[1:, list(FINDINGS)] == "").all().all() and float(table.loc[0, "Atelectasis"]) >= 0
    assert "uniform" in table.loc[1, "Reason"] and table.loc[0, "Reason"] == ""
    assert "1 of the files does not look like" in "\n".join(e.value for e in app.error)


def test_a_ticked_row_and_the_grad_cam_selector_never_disagree(app):  # noqa: F811
    other = (IMAGES / "00000002_000.png").read_bytes()
    batch(app, [("a.png", XRAY, "image/png"), ("b.png", other, "image/png")])
    chooser = widget(app.selectbox, "Show the Grad-CAM of")
    assert not chooser.disabled and chooser.value == "a.png"
    app.session_state["batch-table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    app.run()
    chooser = widget(app.selectbox, "Show the Grad-CAM of")
    assert chooser.value == "b.png" and chooser.disabled  # shows the ticked row, and cannot be moved away from it
    assert "Image `b.png`" in text(app)


def test_probability_labels_never_sit_under_threshold_ticks(app):  # noqa: F811
    open_page(app, "predict")
    app.file_uploader[0].set_value(("upload.png", XRAY, "image/png")).run()
    probability = next(fig for fig in figures(app) if "Probability of each finding" in json.dumps(fig["layout"]))
    bars = [trace for trace in probability["data"] if trace["type"] == "bar"]
    labels = [trace for trace in probability["data"] if trace.get("mode") == "text"]
    ticks = [trace for trace in probability["data"] if trace.get("name") == "Operating threshold"]
    assert len(bars) == 1 and not bars[0].get("text")
    assert len(labels) == 1 and len(labels[0]["text"]) == 14
    assert ticks, "the tiny run's evaluation gives thresholds"
    assert min(labels[0]["x"]) > max(max(ticks[0]["x"]), 1.0)


def test_images_per_patient_axis_is_readable_on_the_full_metadata_with_filters(app):  # noqa: F811
    app.sidebar.radio[0].set_value("Full NIH metadata").run()
    open_page(app, "dataset")
    for findings in ([], ["Hernia"], ["Pneumothorax", "Edema"]):
        widget(app.multiselect, "Findings").set_value(findings).run()
        assert not app.exception
        per_patient = next(fig for fig in figures(app) if "Images per patient" in json.dumps(fig["layout"]))
        categories = per_patient["data"][0]["x"]
        assert per_patient["layout"]["xaxis"]["type"] == "category"
        assert len(categories) <= 10 and categories[0] == "1", categories
