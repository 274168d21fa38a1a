"""`pipeline.plots.conformal`: the risk-coverage figure draws the stored curve, and `conformal.html` works offline."""

from __future__ import annotations

import numpy as np
from conftest import REPO

from pipeline import plots
from pipeline.evaluation import results

SHIPPED = REPO / "artifacts" / "runs" / "densenet121-128-weighted" / "eval-test"


def test_risk_coverage_figure_draws_the_shipped_curve(tmp_path):
    guarantees, curve = results.read_conformal(SHIPPED), results.read_risk_coverage(SHIPPED)
    fig = plots.risk_coverage_figure(curve, guarantees)
    lines = {trace.name: trace for trace in fig.data}
    np.testing.assert_array_equal(np.array(lines["mean AUC"].y, dtype=float), curve["mean_auc"])
    miss = lines[plots.conformal.MISS_LINE]
    assert list(miss.x) == curve["coverage"].tolist()
    enough = curve["positives"] >= results.MIN_COUNT
    assert 0 < enough.sum() < len(curve)  # the demo's tail rests on fewer than 10 positives
    np.testing.assert_array_equal(np.array(miss.y, dtype=float)[enough], curve["miss_rate"][enough])
    assert np.isnan(np.array(miss.y, dtype=float)[~enough]).all()  # no solid line where too few remain
    band = lines[plots.conformal.BAND]
    assert band.fill == "tonexty" and list(band.y) == curve["miss_low"][enough].tolist()
    assert list(fig.data[list(fig.data).index(band) - 1].y) == curve["miss_high"][enough].tolist()
    assert "of %{customdata[2]} positives missed" in miss.hovertemplate and "[%{customdata[3]" in miss.hovertemplate
    few = next(t for t in fig.data if (t.name or "").startswith(plots.conformal.TOO_FEW))
    assert few.line.dash == "dot" and np.isfinite(np.array(few.y, dtype=float)[~enough]).any()
    assert any(a.text == plots.conformal.TOO_FEW for a in fig.layout.annotations)
    assert any(shape.y0 == guarantees.miss_rate for shape in fig.layout.shapes)  # the promised rate
    assert curve["coverage"].iloc[0] == 1 and curve["n_kept"].iloc[-1] == 0
    html = plots.write_conformal_plot(guarantees, curve, tmp_path)
    assert html.name == plots.CONFORMAL_PLOT and not list(tmp_path.glob("*.js"))
    assert 'src="plotly.min.js"' not in html.read_text()  # the library is inline: the page works copied alone


def test_a_curve_written_before_the_counts_is_drawn_without_a_band(tmp_path):
    guarantees, curve = results.read_conformal(SHIPPED), results.read_risk_coverage(SHIPPED)
    curve.drop(columns=results.RISK_COVERAGE_INTERVAL).to_csv(tmp_path / results.RISK_COVERAGE_CSV, index=False)
    fig = plots.risk_coverage_figure(results.read_risk_coverage(tmp_path), guarantees)
    names = [trace.name for trace in fig.data]
    assert plots.conformal.MISS_LINE in names and plots.conformal.BAND not in names
    assert not any(trace.fill for trace in fig.data)
