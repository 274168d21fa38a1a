"""The dashboard end to end in a real browser: `streamlit run` in a subprocess, Chromium driven by Playwright.

Visits every page, runs a prediction on an original 1024 x 1024 NIH image and a corrupt upload, and saves a
full-page screenshot of each page under test-output/screenshots/ (for the README). Uses the committed demo
model when there is one, else a 64 px random-init model built here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, TEST_DATA, free_ports
from test_app import artifacts  # noqa: F401 - the fixture, shared with the AppTest tests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "test-output" / "screenshots"
TIMEOUT_MS = 120_000  # the first Predict visit imports TensorFlow and loads the model in the server
WIDTH = 1400

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium at /usr/bin/chromium")


def start_app(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py` on a free port; returns the process and its URL once it answers."""
    port = free_ports(1)[0]
    command = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"streamlit did not start; see {log}:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(request, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The running app's URL and the artifacts folder it reads: the demo model's, or the tiny test model's."""
    from pipeline.core import paths
    from pipeline.training import runs

    env = {**os.environ}
    env.pop(paths.ARTIFACTS_ENV, None)
    folder = paths.default_artifacts_dir()
    if not any(run.checkpoint for run in runs.find_runs(folder)):  # no demo model committed
        folder = request.getfixturevalue("artifacts")
        env[paths.ARTIFACTS_ENV] = str(folder)
    process, url = start_app(env, tmp_path_factory.mktemp("log") / "streamlit.log")
    yield url, folder
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    app_url, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # A second tab opens Predict first, so the server loads the model (TensorFlow, without an export) while the
        # other pages are being tested.
        browser.new_page().goto(f"{app_url}/predict")
        tab = browser.new_page(viewport={"width": WIDTH, "height": 900})
        tab.set_default_timeout(TIMEOUT_MS)
        yield tab
        browser.close()


def settle(page, quiet_ms: int = 1000) -> None:
    """Wait until the page stops changing.

    That is: no script run going on (Streamlit's status widget is gone) and the same number of elements on the
    page for ``quiet_ms``; the status widget alone goes before the last elements arrive.
    """
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = page.locator('[data-testid="stElementContainer"]').count()
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if count != last or running:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since > quiet_ms / 1000:
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the page kept changing")


def visit(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title, level=1).wait_for()
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]')\
        .first.inner_text()


def screenshot(page, name: str, min_charts: int = 0) -> int:
    """Save a full-page PNG and return how many charts it shows (waiting for at least ``min_charts``).

    Streamlit scrolls inside its main element, and draws charts only once they are in view, so the viewport
    is stretched to the page's height first.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": max(900, height)})
    charts = page.locator('[data-testid="stPlotlyChart"]')
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while charts.count() < min_charts and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    page.wait_for_timeout(700)  # Plotly redraws for the new size
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    shown = charts.count()
    page.set_viewport_size({"width": WIDTH, "height": 900})
    return shown


def test_every_page_in_a_browser(page, served):
    from pipeline.training import runs

    app_url, folder = served
    visit(page, app_url, "Chest X-ray toolkit")
    assert page.get_by_text("not a medical device").first.is_visible()
    screenshot(page, "home")

    visit(page, f"{app_url}/dataset", "Dataset")
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "549"
    assert screenshot(page, "dataset", min_charts=8) >= 8

    visit(page, f"{app_url}/leakage", "Patient leakage")
    assert page.get_by_text("No leakage").is_visible()
    screenshot(page, "leakage")

    visit(page, f"{app_url}/balance", "Class balance")
    assert screenshot(page, "balance", min_charts=2) == 2

    visit(page, f"{app_url}/performance", "Model performance")
    if runs.find_evaluations(folder):
        assert screenshot(page, "performance", min_charts=1) >= 1
        page.get_by_role("tab", name="Subgroups").click()  # the subgroup audit: honesty, table, gap forest plot
        page.get_by_text("far too few for conclusions about subgroups", exact=False).first.wait_for()
        assert page.get_by_text("Underdiagnosis", exact=True).first.is_visible()
        assert page.locator('[data-testid="stTabPanel"]:visible [data-testid="stPlotlyChart"]').count() >= 1
        screenshot(page, "performance-subgroups")
    else:  # a demo model committed without its evaluation: the page says how to make one
        assert page.get_by_text("chestxray evaluate", exact=False).first.is_visible()
        screenshot(page, "performance")


def test_predict_upload_and_corrupt_file(page, served, tmp_path):
    app_url, _ = served
    visit(page, f"{app_url}/predict", "Predict")
    assert page.get_by_text("not a medical device").first.is_visible()
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')

    uploader.set_input_files(str(TEST_DATA / "00000001_000.png"))
    page.get_by_text("1024 x 1024 px", exact=False).wait_for()
    images = page.locator('[data-testid="stImage"] img')
    images.nth(1).wait_for()  # the Grad-CAM overlay is drawn after the probabilities
    settle(page)
    assert page.get_by_text("Probability of each finding").first.is_visible()
    assert images.count() == 2  # the original and the Grad-CAM overlay
    assert page.get_by_text("Grad-CAM:", exact=False).is_visible()
    screenshot(page, "predict")

    # more files are added to the upload: a table of three, the corrupt one listed with its reason
    corrupt = tmp_path / "truncated.png"
    corrupt.write_bytes((TEST_DATA / "00000001_000.png").read_bytes()[:500])
    uploader.set_input_files([str(corrupt), str(TEST_DATA / "00000100_000.png")])  # the RGBA original too
    page.get_by_text("3 files: 2 predicted, 0 out of distribution, 1 unreadable", exact=False).wait_for()
    error = page.locator('[data-testid="stAlertContentError"] [data-testid="stMarkdownContainer"]')
    error.first.wait_for()
    message = error.first.inner_text().strip()
    assert message.startswith("truncated.png:") and "\n" not in message
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the table
    images.nth(1).wait_for()  # the chosen row's Grad-CAM
    settle(page)
    assert images.count() == 2
    screenshot(page, "predict-error")

    # a click on the third row (the RGBA original) shows its Grad-CAM: the grid is a canvas, rows 35 px high
    box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()  # the batch table, above the answers
    page.mouse.click(box["x"] + 12, box["y"] + 35 * 3 + 17)
    page.get_by_text("Image 00000100_000.png", exact=False).wait_for()
    images.nth(1).wait_for()
    settle(page)
    assert images.count() == 2
    # the selector below the table shows the ticked row and is locked to it, so the two cannot disagree
    chooser = page.locator('[data-testid="stSelectbox"]').filter(has_text="Show the Grad-CAM of")
    for _ in range(40):  # the unlocked selector is replaced by the locked one
        if chooser.count() == 1:
            break
        page.wait_for_timeout(250)
    shown = chooser.inner_text() + " " + chooser.locator("input").first.input_value()
    assert "00000100_000.png" in shown, chooser.inner_html()[:3000]
    assert chooser.locator("input").first.is_disabled()


def test_conformal_answers_and_guarantees(page, served):
    """Predict shows the three answers with their calibration source; Model performance the Guarantees tab."""
    from pipeline.evaluation import conformal

    app_url, folder = served
    shipped = any(conformal.read_conformal(path) for path in folder.glob("runs/*/eval-test"))
    visit(page, f"{app_url}/predict", "Predict")
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    uploader.set_input_files(str(TEST_DATA / "00000001_000.png"))
    page.get_by_text("1024 x 1024 px", exact=False).wait_for()
    settle(page)
    if not shipped:  # the tiny test run has no conformal thresholds: the page says where they would come from
        assert page.get_by_text("No conformal answers", exact=False).first.is_visible()
        return
    heading = page.get_by_role("heading", name="Ruled out, uncertain or flagged")
    heading.wait_for()
    heading.scroll_into_view_if_needed()
    screenshot(page, "predict-conformal")
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Conformal answers")
    assert "calibrated on" in caption.inner_text() and "eval-valid" in caption.inner_text()

    visit(page, f"{app_url}/performance", "Model performance")
    page.get_by_role("tab", name="Guarantees").click()
    page.get_by_text("Image level", exact=False).first.wait_for()
    settle(page)
    assert page.get_by_text("What the guarantee says", exact=False).first.is_visible()
    screenshot(page, "performance-guarantees", min_charts=1)
