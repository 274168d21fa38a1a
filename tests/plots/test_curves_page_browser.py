"""`evaluate --plots`'s page, copied alone into an empty folder, draws its three figures in a real Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import NIH, TEST_LABELS, run_main, write_predictions

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium at /usr/bin/chromium")


def test_a_copied_curves_page_draws_offline(tmp_path, capsys):
    from playwright.sync_api import sync_playwright

    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    out = tmp_path / "eval"
    argv = ["evaluate", "--predictions", predictions, "--labels", NIH / "test.csv", "--out", out, "--bootstrap", "0"]
    code, _, err = run_main(capsys, *argv, "--plots")
    assert code == 0, err
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(out / "curves.html", alone / "copied.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.route("http*://**", lambda route: route.abort())  # offline: nothing may come from the network
        page.goto((alone / "copied.html").as_uri())
        page.locator(".plotly-graph-div .main-svg").nth(5).wait_for(timeout=60_000)  # two svg layers per figure
        assert page.locator(".plotly-graph-div").count() == 3
        assert "55 images" in page.title()
        browser.close()
