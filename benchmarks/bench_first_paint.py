"""Time to first paint of the dashboard in a real browser: Home, and Predict (the page that loads TensorFlow).

Starts `streamlit run app/main.py` on a free port, opens it in Chromium with Playwright and prints the seconds
from navigation until the page's title is visible, first on a fresh server (cold) and then on a reload (warm).
For Predict it also times until the probabilities are drawn (model load, first Grad-CAM), and then, on
another fresh server, what a person who opens Predict and uploads at once waits for: from choosing the
file (a 1024 x 1024 NIH original) until its probabilities and its Grad-CAM overlay are drawn, and the same
for a second upload (which turns the page into a two-row table; timed until that file's row is drawn).
That needs a run with a checkpoint under $CHESTXRAY_ARTIFACTS or artifacts/.
Run from the repository root: .venv/bin/python -m benchmarks.bench_first_paint
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
FIRST_UPLOAD = REPO / "tests" / "fixtures" / "00000001_000.png"
SECOND_UPLOAD = REPO / "tests" / "fixtures" / "00000100_000.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000


def start_app(log: Path) -> tuple[subprocess.Popen, str, float]:
    """`streamlit run` on a free port; returns the process, its URL and the seconds until it answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - start < 60:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return process, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"streamlit did not start; see {log}")


def title(text: str) -> str:
    """Selector of a page title (st.title renders an h1)."""
    return f'h1:has-text("{text}")'


def time_until(page: Page, url: str | None, *selectors: str) -> list[float]:
    """Seconds from navigating to ``url`` (None: reload) until each selector in turn matches a visible element."""
    start = time.perf_counter()
    page.reload() if url is None else page.goto(url)
    times = []
    for selector in selectors:
        page.locator(selector).first.wait_for(state="visible", timeout=TIMEOUT_MS)
        times.append(time.perf_counter() - start)
    return times


def time_upload(page: Page, path: Path, *selectors: str) -> list[float]:
    """Seconds from choosing ``path`` in the page's file uploader until each selector in turn is visible."""
    start = time.perf_counter()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))
    times = []
    for selector in selectors:
        page.locator(selector).last.wait_for(state="visible", timeout=TIMEOUT_MS)
        times.append(time.perf_counter() - start)
    return times


def upload_at_once(browser, log: Path) -> None:
    """A fresh server; open Predict and upload as soon as the uploader is there; then upload a second file."""
    process, url, _ = start_app(log)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/predict")
        page.locator('[data-testid="stFileUploader"] input[type="file"]').wait_for(state="attached",
                                                                                    timeout=TIMEOUT_MS)
        # the caption above the chart names the upload's size (samples are 320 px); the original's caption
        # is drawn beside the overlay, last
        first = time_upload(page, FIRST_UPLOAD, "text=1024 x 1024 px", f"text=Original: {FIRST_UPLOAD.name}")
        print(f"first upload on a fresh server: probabilities {first[0]:.2f} s, Grad-CAM overlay {first[1]:.2f} s "
              "after choosing the file (goal <= 3 s)")
        (second,) = time_upload(page, SECOND_UPLOAD, "text=2 files: 2 predicted")
        print(f"second upload: the two-row table drawn {second:.2f} s after choosing the file (goal <= 1 s)")
        page.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    from pipeline.core import paths
    from pipeline.training import runs

    has_model = any(run.checkpoint for run in runs.find_runs(paths.artifacts_dir()))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
          f"runs from {paths.artifacts_dir()}{'' if has_model else ' (no checkpoint: Predict shows a command)'}")
    log = Path(tempfile.mkdtemp()) / "streamlit.log"
    process, url, started = start_app(log)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            print(f"server answers after {started:.2f} s")
            (home_cold,) = time_until(page, url, title("Chest X-ray toolkit"))
            (home_warm,) = time_until(page, None, title("Chest X-ray toolkit"))
            print(f"Home title visible: {home_cold:.2f} s on a fresh server, {home_warm:.2f} s on a reload")

            chart = 'text="Probability of each finding"'  # the chart's title, drawn with the chart
            targets = [title("Predict"), chart] if has_model else [title("Predict")]
            cold = time_until(page, f"{url}/predict", *targets)
            warm = time_until(page, None, *targets)
            print(f"Predict title visible: {cold[0]:.2f} s first visit, {warm[0]:.2f} s on a reload")
            if has_model:
                print(f"Predict probabilities drawn: {cold[1]:.2f} s first visit (model load, Grad-CAM), "
                      f"{warm[1]:.2f} s on a reload")
        finally:
            process.terminate()
            process.wait(timeout=10)
            if has_model:
                upload_at_once(browser, log.with_name("streamlit-upload.log"))
            browser.close()


if __name__ == "__main__":
    main()
