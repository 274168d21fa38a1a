"""The dashboard, page by page, in Streamlit's headless AppTest: it renders, shows the right numbers, reacts.

The pages that need a model read a small but real artifacts folder built here (`build_artifacts`) through
$CHESTXRAY_ARTIFACTS, so these tests pass with or without a committed demo model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO, TEST_DATA

from pipeline.core.findings import FINDINGS

MAIN = str(REPO / "app" / "main.py")
TIMEOUT = 60  # seconds per script run: the first Predict run imports TensorFlow and loads the model


def build_artifacts(root: Path, net) -> Path:
    """An artifacts folder holding what `train` and `evaluate` write, for a 64 px random-init model.

    ``runs/tiny``: best.keras, a stand-in config.json and history.csv, and real evaluations of the checkpoint on
    nih/test.csv (thresholds chosen on nih/valid-small.csv) and on nih/valid-small.csv.
    ``runs/noisy-labels/eval-test``: the test labels plus noise, a second scorer of the same images to compare.
    Evaluations go through `python -m pipeline evaluate`, so they are exactly what the CLI writes; the tiny run's
    are of its checkpoint (`--checkpoint`), which records its SHA-256, so that Predict may use their thresholds.
    """
    from pipeline.cli import main
    from pipeline.data import label_files
    from pipeline.networks import densenet

    run = root / "runs" / "tiny"
    densenet.save(net, run / "best.keras")
    config = {"train": "nih/train-small.csv", "valid": "nih/valid-small.csv", "images": "nih/images",
              "image_size": densenet.input_size(net), "epochs": 3, "weights": "none", "loss": "weighted",
              "n_train": 439, "n_valid": 55}
    (run / "config.json").write_text(json.dumps(config, indent=2))
    history = {"epoch": [1, 2, 3], "loss": [0.41, 0.33, 0.30], "val_loss": [0.45, 0.40, 0.41],
               "val_mean_auc": [0.52, 0.58, 0.57], "lr": [1e-4, 1e-4, 1e-5]}
    pd.DataFrame(history).to_csv(run / "history.csv", index=False)

    common = ["--bootstrap", "200"]
    tiny = ["--checkpoint", str(run / "best.keras"), "--images", str(IMAGES), *common]
    assert main(["evaluate", "--labels", str(NIH / "valid-small.csv"), "--out", str(run / "eval-valid"), *tiny]) == 0
    assert main(["evaluate", "--labels", str(NIH / "test.csv"), "--valid-predictions", str(run / "eval-valid"),
                 "--out", str(run / "eval-test"), *tiny]) == 0

    test = label_files.load_labels(NIH / "test.csv")
    noisy = test[["Image"]].copy()
    noise = np.random.default_rng(0).random((len(test), len(FINDINGS)))
    noisy[list(FINDINGS)] = 0.3 * test[list(FINDINGS)].to_numpy() + 0.7 * noise
    noisy.to_csv(root / "noisy-predictions.csv", index=False)
    assert main(["evaluate", "--predictions", str(root / "noisy-predictions.csv"), "--labels", str(NIH / "test.csv"),
                 "--out", str(root / "runs" / "noisy-labels" / "eval-test"), *common]) == 0
    return root


@pytest.fixture(scope="session")
def artifacts(small_model, tmp_path_factory):
    """The folder of `build_artifacts`, built once per test process (test_browser.py uses it too)."""
    return build_artifacts(tmp_path_factory.mktemp("artifacts"), small_model)


def start_app(monkeypatch, artifacts: Path | None):
    """A fresh AppTest of the dashboard, run once without an exception, reading runs from ``artifacts`` (None:
    the shipped ones)."""
    from streamlit.testing.v1 import AppTest

    if artifacts is None:
        monkeypatch.delenv("CHESTXRAY_ARTIFACTS", raising=False)
    else:
        monkeypatch.setenv("CHESTXRAY_ARTIFACTS", str(artifacts))
    monkeypatch.chdir(REPO)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


@pytest.fixture
def app(artifacts, monkeypatch):
    """A fresh AppTest of the dashboard reading runs from the test artifacts folder."""
    return start_app(monkeypatch, artifacts)


def open_page(at, page: str):
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def widget(widgets, label: str):
    """The widget of a kind (at.multiselect, at.selectbox, ...) with this label."""
    return next(w for w in widgets if w.label == label)


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def charts(at) -> list[str]:
    """What each Plotly chart of the page shows, in order: its title, else its y axis's title."""
    shown = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec)["layout"]
        title = layout.get("title", {}).get("text") or layout.get("yaxis", {}).get("title", {}).get("text")
        shown.append(title)
    return shown


PERFORMANCE_CHARTS = [  # one evaluation, all findings: ROC, PR and calibration curves, the run's history, subgroups
    "True positive rate (sensitivity)", "Precision (PPV)", "Observed share of positives", "Loss per epoch",
    "Validation mean AUC per epoch", "Gap to the rest per subgroup: 55 images, 95% bootstrap intervals",
]


def text(at) -> str:
    """All markdown, captions and alerts of the page, to search for sentences."""
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning", "code") for e in
             getattr(at, kind)]
    return "\n".join(map(str, parts))


def test_home_shows_data_model_and_intended_use(app):
    assert app.title[0].value == "Chest X-ray toolkit"
    assert metric(app, "Images") == "549"
    assert 0 <= float(metric(app, "Mean AUC over the findings")) <= 1
    body = text(app)
    assert "55 images of `nih/test.csv`" in body and "95% CI" in body
    assert "not a medical device" in body and "Wang X, Peng Y" in body
    assert "trained from scratch" in body and "439" in body  # a --weights none run says it is weak
    app.sidebar.radio[0].set_value("Full NIH metadata").run()
    assert (metric(app, "Images"), metric(app, "Patients")) == ("112,120", "30,805")


def test_pages_without_any_run_say_how_to_make_one(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CHESTXRAY_ARTIFACTS", str(tmp_path))
    monkeypatch.chdir(REPO)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    for page in ("home", "performance", "predict"):
        if page != "home":
            open_page(at, page)
        body = text(at)
        assert "No trained model yet" in body, page
        assert ".venv/bin/chestxray train --train nih/train-small.csv" in body
        assert ".venv/bin/chestxray evaluate --checkpoint" in body


def test_only_predict_imports_tensorflow(artifacts):
    """Every page but Predict renders without TensorFlow, so the dashboard opens fast (a fresh interpreter)."""
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({MAIN!r}, default_timeout={TIMEOUT})\n"
        "at.run()\n"
        "for page in ('dataset', 'leakage', 'balance', 'performance'):\n"
        "    at.switch_page(f'views/{page}.py').run()\n"
        "    assert not at.exception, page\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "CHESTXRAY_ARTIFACTS": str(artifacts)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_dataset_filters_change_every_count(app):
    open_page(app, "dataset")
    assert metric(app, "Images") == "549" and metric(app, "Patients") == "549"
    charts = len(app.get("plotly_chart"))
    assert charts >= 8
    widget(app.multiselect, "Findings").set_value(["Hernia"]).run()
    assert metric(app, "Images") == "18"
    widget(app.multiselect, "Sex").set_value(["F"]).run()
    women_with_hernia = metric(app, "Images")
    assert 0 < int(women_with_hernia) < 18
    captions = [caption for image in app.image for caption in image.captions if not caption.endswith(" box")]
    assert captions and all("Hernia" in caption for caption in captions)  # the gallery follows the filters too
    assert "6 of the images in `nih/images` and `nih/boxed`" in text(app) and "984 boxes" in text(app)

    app.sidebar.radio[0].set_value("Full NIH metadata").run()
    assert metric(app, "Images") != "18"
    widget(app.multiselect, "Sex").set_value([]).run()
    assert metric(app, "Images") == "227"  # Hernia in all 112,120 images
    widget(app.multiselect, "Findings").set_value([]).run()
    widget(app.slider, "Age (years)").set_value((60, 100)).run()
    older = int(metric(app, "Images").replace(",", ""))
    assert 0 < older < 112_120


def test_leakage_verdict_follows_the_chosen_files(app):
    open_page(app, "leakage")
    assert "No leakage" in app.success[0].value
    assert metric(app, "Official split: test patients also in training") == "0"
    assert metric(app, "Naive split: test patients also in training") == "8,429"
    widget(app.multiselect, "Label files from nih/").set_value(["sample_labels.csv", "test.csv"]).run()
    assert "Leakage" in app.error[0].value and "55 patients" in app.error[0].value
    table = app.dataframe[0].value
    assert table.loc[0, "Shared patients"] == 55

    leaky = (NIH / "test.csv").read_bytes()  # uploaded as a second copy of the test file: every patient leaks
    widget(app.multiselect, "Label files from nih/").set_value(["test.csv"]).run()
    app.file_uploader[0].set_value(("mine.csv", leaky, "text/csv")).run()
    assert "Leakage" in app.error[0].value and "mine.csv" in app.error[0].value
    app.file_uploader[0].set_value(("broken.csv", b"not,a,label\nfile,at,all\n", "text/csv")).run()
    assert any("broken.csv: not a label file" in e.value for e in app.error)


def test_class_balance_weights_equalise_contributions(app):
    open_page(app, "balance")
    assert metric(app, "Images in the training file") == "439"  # the run's training file, train-small.csv
    assert charts(app) == ["Frequency of positive and negative labels",
                           "Contribution of positive and negative images to the loss"]
    box = widget(app.selectbox, "Training file")
    box.set_value("test.csv").run()
    assert metric(app, "Images in the training file") == "55"


def test_performance_curves_comparison_and_refusal(app):
    open_page(app, "performance")
    assert widget(app.multiselect, "Evaluations").value == ["runs/tiny/eval-test"]
    table = app.dataframe[0].value
    assert table.loc[0, "Images"] == 55 and table.loc[0, "Labels file"].endswith("test.csv")
    assert charts(app) == PERFORMANCE_CHARTS
    assert "55 images of" in text(app)

    widget(app.selectbox, "Finding").set_value("Infiltration").run()  # 11 positives in test.csv
    widget(app.multiselect, "Evaluations").set_value(["runs/tiny/eval-test", "runs/noisy-labels/eval-test"]).run()
    assert not app.exception
    comparison = next(d.value for d in app.dataframe if "p_value" in d.value.columns)  # the Comparison tab's
    assert set(comparison["finding"]) == {"Infiltration", "mean"}
    p_value = comparison.loc[comparison["finding"] == "Infiltration", "p_value"].iloc[0]
    assert 0 <= p_value <= 1

    widget(app.multiselect, "Evaluations").set_value(["runs/tiny/eval-test", "runs/tiny/eval-valid"]).run()
    assert any("different" in e.value and "compare only evaluations" in e.value for e in app.error)


def test_predict_sample_upload_and_corrupt_file(app):
    open_page(app, "predict")
    assert any("not a medical device" in w.value for w in app.warning)
    assert len(app.get("plotly_chart")) == 1 and len(app.image) == 2
    assert "320 x 320 px" in text(app)

    original = (TEST_DATA / "00000001_000.png").read_bytes()
    app.file_uploader[0].set_value(("00000001_000.png", original, "image/png")).run()
    assert not app.exception and not app.error
    assert "1024 x 1024 px" in text(app)
    top = widget(app.selectbox, "Grad-CAM for").value
    assert top in FINDINGS
    widget(app.slider, "Heatmap opacity").set_value(0.8).run()
    assert len(app.image) == 2

    app.file_uploader[0].set_value(("broken.png", original[:300], "image/png")).run()
    assert len(app.error) == 1
    message = app.error[0].value
    assert "broken.png" in message and "\n" not in message
    app.file_uploader[0].set_value(None).run()  # back to the sample image: the page still works
    assert not app.error and len(app.image) == 2


def test_predict_shows_no_server_paths_skips_special_files_and_states_the_upload_limit(artifacts, tmp_path,
                                                                                      monkeypatch):
    from streamlit.testing.v1 import AppTest

    folder = tmp_path / "images"
    folder.mkdir()
    os.symlink(IMAGES / "00000001_000.png", folder / "00000001_000.png")
    os.mkfifo(folder / "00000002_000.png")  # a page that opened it would block for ever
    monkeypatch.setenv("CHESTXRAY_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("CHESTXRAY_IMAGES", str(folder))
    monkeypatch.chdir(REPO)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    open_page(at, "predict")
    page = text(at)
    assert "$CHESTXRAY_ARTIFACTS/runs/tiny/best.keras" in page
    for where in (str(artifacts), str(tmp_path)):
        assert where not in page, page[page.find(where) - 300 : page.find(where) + 100]
    picker = widget(at.selectbox, "Or pick an image")
    assert picker.options == ["00000001_000.png"] and "not regular files: 00000002_000.png" in picker.help
    assert "Up to 100 MB" in at.get("file_uploader")[0].help


# --- damaged artifacts: one error frame ---------------------------------------------------------------------------

PAGES = ("home", "dataset", "leakage", "balance", "performance", "predict")


def damage(artifacts: Path, tmp_path: Path, kind: str) -> Path:
    """A copy of the test artifacts with one file broken as a crash or a careless hand would leave it."""
    import shutil

    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    run = copy / "runs" / "tiny"
    if kind == "corrupt-metrics":
        (run / "eval-test" / "metrics.json").write_text('{"n_images": 55, "auc": {"Atelect')
    elif kind == "truncated-history":
        (run / "history.csv").write_text('epoch,loss,val_loss,val_mean_auc,lr\n1,0.41,"0.4')
    elif kind == "missing-checkpoint":
        (run / "best.keras").unlink()
    return copy


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("kind", ["corrupt-metrics", "truncated-history", "missing-checkpoint"])
def test_damaged_artifacts_never_end_a_page_in_a_traceback(artifacts, tmp_path, monkeypatch, kind, page):
    """Each page with a broken file: no exception, the problem in one red box, the other sections still drawn."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CHESTXRAY_ARTIFACTS", str(damage(artifacts, tmp_path, kind)))
    monkeypatch.chdir(REPO)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    if kind == "missing-checkpoint":  # no run has a checkpoint now, so the sidebar starts at another run
        widget(at.sidebar.selectbox, "Run").set_value("tiny").run()
    if page != "home":
        open_page(at, page)
    errors = [e.value for e in at.error]
    body = text(at)
    assert all("\n" not in e for e in errors), errors
    if kind == "corrupt-metrics" and page in ("home", "performance", "predict"):
        assert errors and all("metrics.json: unreadable" in e and "run the evaluation again" in e for e in errors)
    elif kind == "truncated-history" and page == "performance":
        assert errors and all("history.csv: cannot be read as CSV" in e for e in errors)
    else:
        assert not errors, errors
    # the sections the damage does not touch are still there
    if page == "home":
        assert metric(at, "Images") == "549" and "Intended use" in [h.value for h in at.subheader]
        assert "trained from scratch" in body  # the run's config is intact
        if kind == "missing-checkpoint":
            assert "has no checkpoint" in body and ".venv/bin/chestxray train" in body
    elif page == "performance":
        if kind == "corrupt-metrics":  # the test evaluation is unreadable: the others are offered
            assert "runs/tiny/eval-valid" in widget(at.multiselect, "Evaluations").options
        else:  # the curves always; the training history unless its history.csv is the broken file
            history = [] if kind == "truncated-history" else PERFORMANCE_CHARTS[3:5]
            assert charts(at) == PERFORMANCE_CHARTS[:3] + history + PERFORMANCE_CHARTS[5:]
    elif page == "predict":
        if kind == "missing-checkpoint":
            assert "has no checkpoint" in body
        else:
            assert len(at.get("plotly_chart")) == 1 and len(at.image) == 2
            marked = "no operating thresholds are marked" in body
            assert marked == (kind == "corrupt-metrics")
    elif page == "balance":
        assert len(at.get("plotly_chart")) == 2


def test_predict_warns_on_a_non_xray_and_hides_its_probabilities(app):
    import cv2

    open_page(app, "predict")
    photo = np.zeros((480, 640, 3), np.uint8)
    photo[:, :320] = (0, 200, 0)
    ok, data = cv2.imencode(".jpg", photo)
    app.file_uploader[0].set_value([("holiday.jpg", data.tobytes(), "image/jpeg")]).run()
    assert not app.exception
    assert any("does not look like a chest X-ray" in e.value and "colour image" in e.value for e in app.error)
    assert len(app.get("plotly_chart")) == 0 and len(app.image) == 0  # nothing shown until asked
    widget(app.checkbox, "Show the probabilities anyway").check().run()
    assert len(app.get("plotly_chart")) == 1 and len(app.image) == 2


def test_predict_batch_upload_gives_a_table_csv_and_grad_cam_per_row(app):
    import cv2

    open_page(app, "predict")
    xray = (TEST_DATA / "00000001_000.png").read_bytes()
    other = (IMAGES / "00000002_000.png").read_bytes()
    ok, flat = cv2.imencode(".png", np.full((300, 300), 120, np.uint8))
    files = [("a.png", xray, "image/png"), ("b.png", other, "image/png"), ("flat.png", flat.tobytes(), "image/png"),
             ("broken.png", xray[:300], "image/png")]
    app.file_uploader[0].set_value(files).run()
    assert not app.exception
    assert "4 files: 2 predicted, 1 out of distribution, 1 unreadable" in app.subheader[0].value
    assert any("broken.png" in e.value and "truncated" in e.value for e in app.error)
    table = app.dataframe[0].value
    assert list(table["File"]) == ["a.png", "b.png", "flat.png", "broken.png"]
    assert list(table["Status"]) == ["ok", "ok", "out of distribution", "unreadable"]
    assert (table.loc[:1, list(FINDINGS)] != "").all().all()  # the good files are still predicted
    assert (table.loc[2:, list(FINDINGS)] == "").all().all()  # the flagged file's probabilities are hidden
    assert "uniform" in table.loc[2, "Reason"]
    chooser = widget(app.selectbox, "Show the Grad-CAM of")
    assert chooser.options == ["a.png", "b.png", "flat.png"]
    chooser.set_value("b.png").run()
    assert "Image `b.png`" in text(app) and len(app.image) == 2
    assert any(button.label == "Download the table (CSV)" for button in app.get("download_button"))
