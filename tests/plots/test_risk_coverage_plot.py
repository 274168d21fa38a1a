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
    assert list(lines["positives ruled out (findings with a threshold)"].x) == curve["coverage"].tolist()
    assert any(shape.y0 == guarantees.miss_rate for shape in fig.layout.shapes)  # the promised rate
    assert curve["coverage"].iloc[0] == 1 and curve["n_kept"].iloc[-1] == 0
    html = plots.write_conformal_plot(guarantees, curve, tmp_path)
    assert html.name == plots.CONFORMAL_PLOT and not list(tmp_path.glob("*.js"))
    assert 'src="plotly.min.js"' not in html.read_text()  # the library is inline: the page works copied alone
