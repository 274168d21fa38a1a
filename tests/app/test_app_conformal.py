"""The dashboard's conformal parts in AppTest: the three answers on Predict (one image, an out-of-distribution
image, the batch table) and the Guarantees view of Model performance (issue 19)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import TEST_DATA
from test_app import build_artifacts, open_page, start_app, text, widget

from pipeline.core.findings import FINDINGS
from pipeline.evaluation import conformal

ANSWERS = {"ruled out", "uncertain", "flagged"}


@pytest.fixture(scope="module")
def artifacts_with_guarantees(small_model, tmp_path_factory):
    """The test artifacts of test_app, with conformal thresholds (miss rate 0.2) in the tiny run's eval-test."""
    root = build_artifacts(tmp_path_factory.mktemp("artifacts"), small_model)
    run = root / "runs" / "tiny"
    conformal.add_to_evaluation(run / "eval-test", run / "eval-valid", 0.2, n_bootstrap=100)
    return root


@pytest.fixture
def app(artifacts_with_guarantees, monkeypatch):
    return start_app(monkeypatch, artifacts_with_guarantees)


def answers_frame(at):
    return next(d.value for d in at.dataframe if "Answer" in d.value.columns)


def test_predict_shows_the_three_answers_with_guarantee_and_source(app):
    open_page(app, "predict")
    app.file_uploader[0].set_value(("x.png", (TEST_DATA / "00000001_000.png").read_bytes(), "image/png")).run()
    assert not app.exception
    assert "Ruled out, uncertain or flagged" in [h.value for h in app.subheader]
    table = answers_frame(app)
    assert sorted(table["Finding"]) == sorted(FINDINGS) and set(table["Answer"]) <= ANSWERS
    body = text(app)
    assert "calibrated on `" in body and "eval-valid" in body and "miss rate at most 0.2" in body
    assert "exchangeable" in body and "Image-level set" in body
    for _, row in table.iterrows():
        if row["Answer"] == "ruled out":
            assert "a positive image is ruled out with probability at most" in row["Guarantee"]


def test_an_out_of_distribution_image_gets_no_guarantee(app):
    open_page(app, "predict")
    photo = np.zeros((480, 640, 3), np.uint8)
    photo[:, :320] = (0, 200, 0)
    ok, data = cv2.imencode(".jpg", photo)
    app.file_uploader[0].set_value([("holiday.jpg", data.tobytes(), "image/jpeg")]).run()
    widget(app.checkbox, "Show the probabilities anyway").check().run()
    assert not app.exception
    assert any("No guarantee for this image" in w.value and "calibration images" in w.value for w in app.warning)
    assert not any("Answer" in d.value.columns for d in app.dataframe)


def test_batch_table_has_answer_columns_and_none_for_flagged_files(app):
    open_page(app, "predict")
    xray = (TEST_DATA / "00000001_000.png").read_bytes()
    ok, flat = cv2.imencode(".png", np.full((300, 300), 120, np.uint8))
    app.file_uploader[0].set_value([("a.png", xray, "image/png"), ("flat.png", flat.tobytes(), "image/png")]).run()
    assert not app.exception
    table = app.dataframe[0].value
    answered = table.loc[0, ["Flagged", "Uncertain", "Ruled out"]]
    named = [f for cell in answered if cell for f in cell.split(", ")]
    assert sorted(named) == sorted(FINDINGS)  # every finding gets exactly one answer
    assert set(table.loc[1, ["Flagged", "Uncertain", "Ruled out"]]) == {"no guarantee (out of distribution)"}


def test_performance_guarantees_view(app):
    open_page(app, "performance")
    body = text(app)
    assert "miss rate 0.2" in body and "calibrated on" in body and "Image level" in body
    table = next(d.value for d in app.dataframe if "Miss rate here [95% CI]" in d.value.columns)
    assert list(table["Finding"]) == list(FINDINGS)
    few = table[table["Validation positives"] < 4]
    assert (few["Miss rate here [95% CI]"] == "too few positives").all() and len(few) > 0
    assert any("Risk-coverage" in c.value for c in app.caption)
    assert any("the data agree with the promise when it lies within the interval or above it" in c.value
               for c in app.caption)  # not "below it": an interval wholly above the promise means it broke
    widget(app.multiselect, "Evaluations").set_value(["runs/tiny/eval-valid"]).run()
    assert "has no conformal thresholds" in text(app) and not app.exception


def predict_one(monkeypatch, artifacts):
    at = open_page(start_app(monkeypatch, artifacts), "predict")
    at.file_uploader[0].set_value(("x.png", (TEST_DATA / "00000001_000.png").read_bytes(), "image/png")).run()
    assert not at.exception
    return at


def test_guarantees_and_thresholds_of_other_weights_are_not_shown_as_this_ones(artifacts_with_guarantees, small_model,
                                                                             tmp_path, monkeypatch):
    """best.keras retrained (or another run's copied in) after the evaluation: same name, other weights."""
    import shutil

    from pipeline.networks import densenet

    artifacts = shutil.copytree(artifacts_with_guarantees, tmp_path / "artifacts")
    bias = small_model.get_layer("predictions").bias
    original = bias.numpy().copy()
    bias.assign(original + 0.5)
    try:
        densenet.save(small_model, artifacts / "runs" / "tiny" / "best.keras")
    finally:
        bias.assign(original)
    at = predict_one(monkeypatch, artifacts)
    assert not any("Answer" in d.value.columns for d in at.dataframe)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("No conformal answers: `") and "runs/tiny/eval-test` evaluated other weights than those "
               "now in best.keras (their SHA-256 differs), so its thresholds promise nothing for it" in c
               for c in captions), captions
    assert any("no operating thresholds are marked: `runs/tiny/eval-test` evaluated other weights" in c
               for c in captions)
    assert "A black tick marks" not in text(at)


def test_an_evaluation_without_the_checkpoint_hash_matches_by_name_and_says_so(artifacts_with_guarantees, tmp_path,
                                                                              monkeypatch):
    """An evaluation folder written before the hash was recorded: the answers come with a one-line notice."""
    import json
    import shutil

    artifacts = shutil.copytree(artifacts_with_guarantees, tmp_path / "artifacts")
    metrics_file = artifacts / "runs" / "tiny" / "eval-test" / "metrics.json"
    content = json.loads(metrics_file.read_text())
    del content["checkpoint_sha256"]
    metrics_file.write_text(json.dumps(content))
    at = predict_one(monkeypatch, artifacts)
    assert any("Answer" in d.value.columns for d in at.dataframe)
    notice = "runs/tiny/eval-test`, matched by file name only: re-run evaluate to bind them to this checkpoint"
    assert any(c.value.startswith("Conformal answers, thresholds from `") and notice in c.value
               for c in at.caption)  # the answers
    assert any(notice in c.value and "model `" in c.value for c in at.caption)  # the operating thresholds
