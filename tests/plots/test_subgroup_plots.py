"""`pipeline.plots.subgroups`: forest plots of the shipped demo audit, every point with its interval."""

from __future__ import annotations

import pytest
from conftest import REPO

from pipeline import plots
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import results

DEMO = REPO / "artifacts" / "runs" / "densenet121-128-weighted" / "eval-test"


@pytest.fixture(scope="module")
def audit():
    found = results.read_subgroups(DEMO)
    if found is None:
        pytest.skip("the shipped demo evaluation has no subgroups.json")
    return found


def test_gap_forest_plot_draws_each_gap_with_its_interval_and_says_too_few_elsewhere(audit):
    fig = plots.subgroup_gap_figure(audit, "underdiagnosis")
    points, withheld = fig.data
    shown = {plots.subgroups.row_label(g): g.underdiagnosis for g in audit.groups}
    assert len(points.y) + len(withheld.y) == len(audit.groups)
    for label, x, minus, plus in zip(points.y, points.x, points.error_x.arrayminus, points.error_x.array, strict=True):
        rate = shown[label]
        assert x == rate.gap and x - minus == pytest.approx(rate.gap_ci[0]) and x + plus == pytest.approx(
            rate.gap_ci[1])
    for label, text in zip(withheld.y, withheld.text, strict=True):
        assert shown[label].gap is None and (text.startswith("too few") or "rest has too few" in text)


def test_auc_forest_plot_has_a_menu_over_the_findings(audit):
    fig = plots.subgroup_auc_figure(audit)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == list(FINDINGS)
    assert [t.visible for t in fig.data[:4]] == [True, True, False, False]  # the first finding shown at start
    one = plots.subgroup_auc_figure(audit, "Infiltration")
    assert len(one.data) == 2 and not one.layout.updatemenus
    assert "55 images" in one.layout.title.text
