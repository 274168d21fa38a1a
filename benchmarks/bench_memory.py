"""Peak memory of answering one very large image: `predict --gradcam` and the Predict page's library calls.

Goal (issue 20, item 4): any image the pixel limit accepts costs well under 1.5 GB in `predict` (the issue
measured 5.4 GB for a 7000 x 7000 grayscale PNG, when the 14 heatmaps were made at full size). The image is a
7000 x 7000 8-bit PNG made from a real NIH X-ray scaled up (so the guard sees an X-ray); a 16-bit one of the
same size checks the min-max scaling. Each measurement is a fresh interpreter whose peak resident set size
(``ru_maxrss`` from ``wait4``) is reported, with the machine's load beside it, since other jobs share it.
The page case runs what app/views/predict.py runs for an upload: decode, `serving.analyse` at the model's
size, and one overlay on the `gradcam.bounded` copy.
Run from the repository root: .venv/bin/python -m benchmarks.bench_memory [--side 7000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "artifacts" / "runs" / "densenet121-128-weighted" / "best.keras"
SOURCE = REPO / "nih" / "images" / "00000001_000.png"
GOAL_GB = 1.5

PAGE = """
import sys
from pathlib import Path
from pipeline.data import imaging
from pipeline.explain import gradcam
from pipeline.inference import ood, serving
checkpoint, image = Path(sys.argv[1]), sys.argv[2]
predictor = serving.load_predictor(checkpoint)
stats = ood.load(checkpoint.parent)
data = Path(image).read_bytes()  # the upload, held in memory as Streamlit holds it
decoded = imaging.load_decoded(data)
answer = serving.analyse(predictor, stats, [decoded], heatmap_size=predictor.input_size)[0]
overlay = gradcam.overlay(gradcam.bounded(imaging.to_gray(decoded)), answer.heatmaps[0], 0.4)
print(overlay.shape, answer.verdict.in_distribution)
"""


def peak_gb(argv: list[str]) -> tuple[float, str]:
    """Peak RSS in GB of one child process, and its output's last line."""
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({child.returncode}): {lines[-3:]}")
    return usage.ru_maxrss / 2**20, lines[-1] if lines else ""  # ru_maxrss is in KiB on Linux


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7000, help="image side in pixels (default 7000)")
    args = parser.parse_args()
    base = cv2.imread(str(SOURCE), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(base, (args.side, args.side), interpolation=cv2.INTER_CUBIC)
    with tempfile.TemporaryDirectory() as folder:
        images = {"8-bit": Path(folder) / "big8.png", "16-bit": Path(folder) / "big16.png"}
        cv2.imwrite(str(images["8-bit"]), big)
        cv2.imwrite(str(images["16-bit"]), big.astype(np.uint16) * 257)
        print(f"{args.side} x {args.side} px; checkpoint {CHECKPOINT.relative_to(REPO)}; goal: under {GOAL_GB} GB")
        for kind, image in images.items():
            size = image.stat().st_size / 1e6
            command = [sys.executable, "-m", "pipeline", "predict", "--checkpoint", str(CHECKPOINT), "--json",
                       "--gradcam", str(Path(folder) / "cams"), str(image)]
            gb, _ = peak_gb(command)
            print(f"predict --gradcam, {kind} PNG ({size:.1f} MB): peak {gb:.2f} GB, "
                  f"{gb / GOAL_GB:.2f} of the goal  [{load()}]")
            gb, line = peak_gb([sys.executable, "-c", PAGE, str(CHECKPOINT), str(image)])
            print(f"Predict page's calls, {kind} PNG: peak {gb:.2f} GB, {gb / GOAL_GB:.2f} of the goal "
                  f"(overlay {line})  [{load()}]")
        overlay = next((Path(folder) / "cams").iterdir())
        print(f"overlay written: {cv2.imread(str(overlay)).shape[:2]} px")


if __name__ == "__main__":
    main()
