"""`pipeline.plots`: the figures the pages show, built from real evaluations and statistics, and `evaluate --plots`."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest
from conftest import NIH, TEST_LABELS, run_main

from pipeline import plots
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files, stats
from pipeline.evaluation import results


@pytest.fixture(scope="module")
def saved(evaluated, second):
    return {"a": results.read_evaluation(evaluated[0]), "b": results.read_evaluation(second)}


def test_roc_of_one_finding_has_curves_and_operating_points(saved):
    fig = plots.roc_figure(saved, "Infiltration")
    curves = [t for t in fig.data if t.mode == "lines"]
    diamonds = [t for t in fig.data if t.mode == "markers"]
    assert [t.name.split(":")[0] for t in curves] == ["a", "b"] and len(diamonds) == 2
    roc = saved["a"].roc
    assert list(curves[0].x) == roc.loc[roc["finding"] == "Infiltration", "fpr"].tolist()
    point = saved["a"].summary.at_threshold["Infiltration"]
    assert diamonds[0].x[0] == pytest.approx(1 - point.specificity) and diamonds[0].y[0] == point.sensitivity
    assert "AUC" in curves[0].name and "95% CI" in curves[0].name


def test_all_findings_one_evaluation_or_a_grid_of_several(saved):
    one = plots.roc_figure({"a": saved["a"]})
    assert [t.name.split(":")[0] for t in one.data] == list(FINDINGS)
    grid = plots.pr_figure(saved)
    assert len(grid.data) == 2 * len(FINDINGS) and len(grid.layout.annotations) == len(FINDINGS)  # panel titles
    calibration = plots.calibration_figure({"a": saved["a"]}, "Mass")
    assert calibration.data[0].mode == "lines+markers" and "Brier" in calibration.data[0].name


def test_pr_of_one_evaluation_marks_the_prevalence(saved):
    fig = plots.pr_figure({"a": saved["a"]}, "Effusion")
    prevalence = saved["a"].summary.prevalence["Effusion"]
    assert any(shape.y0 == prevalence for shape in fig.layout.shapes)


def test_dataset_figures_follow_the_statistics():
    summary = stats.summarize(label_files.load_labels(TEST_LABELS))
    prevalence = plots.prevalence_figure(summary)
    counts = dict(zip(prevalence.data[0].y, prevalence.data[0].x, strict=True))
    assert counts == {f: summary["prevalence"][f]["count"] for f in FINDINGS}
    assert list(prevalence.data[0].x) == sorted(prevalence.data[0].x)  # rarest first
    heat = plots.cooccurrence_figure(summary)
    z = heat.data[0].z
    assert pd.isna(z[0][0]) and z[0][1] == summary["cooccurrence"][0][1]


def test_training_figures():
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, 0.55],
                            "val_mean_auc": [0.5, 0.55, 0.6]})
    loss, auc = plots.training_figures({"run": history, "other": history.drop(columns="val_mean_auc")})
    assert [t.name for t in loss.data] == ["run loss", "run val_loss", "other loss", "other val_loss"]
    assert [t.name for t in auc.data] == ["run val_mean_auc"] and list(auc.data[0].y) == [0.5, 0.55, 0.6]
    assert isinstance(loss, go.Figure) and loss.layout.xaxis.dtick == 1


def test_evaluate_plots_writes_one_self_describing_self_contained_page(tmp_path, capsys):
    """`evaluate --plots`: one page that names the model, label file and image count and carries its script."""
    import re

    from conftest import write_predictions

    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    out = tmp_path / "eval"
    argv = ["evaluate", "--predictions", predictions, "--labels", NIH / "test.csv", "--out", out, "--bootstrap", "0"]
    code, stdout, err = run_main(capsys, *argv, "--plots")
    assert code == 0, err
    assert "curves.html" in stdout
    pages = sorted(out.glob("*.html"))  # curves.html, and the subgroup audit's pages
    assert "curves.html" in [p.name for p in pages] and not list(out.glob("*.js"))
    for other in pages:  # every page carries its own script
        assert not re.search(r"<script[^>]+src=", other.read_text().replace(plotly.offline.get_plotlyjs(), ""))
    html = (out / "curves.html").read_text()
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert "preds.csv" in title and "55 images" in title and "test.csv" in title
    for words in ("ROC curves", "Precision-recall curves", "Calibration", str(predictions), "Atelectasis"):
        assert words in html, words
    # nothing loaded from elsewhere: the page works copied alone and offline
    library = plotly.offline.get_plotlyjs()
    assert html.count(library) == 1  # the library, inline, once
    page = html.replace(library, "")
    assert not re.search(r"<script[^>]+src=", page) and "cdn.plot.ly" not in page
    assert html.count('class="plotly-graph-div"') == 3
    assert (out / "curves.html").stat().st_size < 6_000_000
    assert not list(out.glob(".*.tmp"))
