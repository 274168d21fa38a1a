"""Does a folder of all 112,120 NIH images open as fast as the embedded sample? ($CHESTXRAY_IMAGES)

Builds, in a temporary folder, one symbolic link per `Image Index` of the full metadata (each pointing at an
embedded image; the 6 boxed images link to themselves), then times, for that folder and for the embedded
images: listing the folder (`pipeline.data.image_folders.list_images`), and the Dataset and Predict pages in
Streamlit's AppTest (first run, then a rerun), both with the full metadata's labels, so only the images
differ. Prints seconds and the ratio full / embedded; a warm-up run first imports TensorFlow.
Run from the repository root: .venv/bin/python -m benchmarks.bench_image_folder
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.data import image_folders  # noqa: E402

METADATA = REPO / "nih" / "metadata" / "Data_Entry_2017_v2020.csv.gz"


def link_folder(folder: Path) -> int:
    """One symlink per NIH image name, to an embedded image (the boxed ones to their own file)."""
    names = pd.read_csv(METADATA, usecols=["Image Index"])["Image Index"]
    sample = sorted((REPO / "nih" / "images").glob("*.png"))
    boxed = {p.name: p for p in (REPO / "nih" / "boxed").glob("*.png")}
    for k, name in enumerate(names):
        os.symlink(boxed.get(name, sample[k % len(sample)]), folder / name)
    return len(names)


def page_seconds(page: str, images: Path | None) -> tuple[float, float]:
    """Seconds of the first run and of a rerun of one page in AppTest."""
    from streamlit.testing.v1 import AppTest

    if images is None:
        os.environ.pop(image_folders.ENV_VAR, None)
    else:
        os.environ[image_folders.ENV_VAR] = str(images)
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
    at.run()
    at.sidebar.radio[0].set_value("Full NIH metadata").run()  # the same labels for both: only the images differ
    start = time.perf_counter()
    at.switch_page(f"views/{page}.py").run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    start = time.perf_counter()
    at.run()
    return first, time.perf_counter() - start


def main() -> None:
    os.chdir(REPO)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        count = link_folder(folder)
        print(f"made {count:,} symlinks in {time.perf_counter() - start:.1f} s")
        timings = {}
        for name, folders in (("embedded", image_folders.EMBEDDED), ("full", (folder,))):
            start = time.perf_counter()
            listed = image_folders.list_images(folders)
            timings[name, "list"] = time.perf_counter() - start
            print(f"{name}: listed {len(listed):,} images in {timings[name, 'list']:.3f} s")
        page_seconds("predict", None)  # warm-up: imports TensorFlow and loads the model once for both
        for page in ("dataset", "predict"):
            for name, images in (("embedded", None), ("full", folder)):
                first, rerun = page_seconds(page, images)
                timings[name, page] = rerun
                print(f"{name}: {page} page first run {first:.2f} s, rerun {rerun:.2f} s")
        for key in ("list", "dataset", "predict"):
            what = "listing" if key == "list" else f"{key} page rerun"
            print(f"ratio full / embedded, {what}: {timings['full', key] / timings['embedded', key]:.2f}")


if __name__ == "__main__":
    main()
