"""`train` on an image folder with an unreadable image: refused in one line before the run folder is written,
so the same command (or one with the file fixed) is never told that the folder already holds a run."""

from __future__ import annotations

import subprocess
import sys

from conftest import IMAGES, NIH, REPO

from pipeline.data import label_files


def test_an_unreadable_image_is_refused_before_anything_is_written(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    table = label_files.load_labels(NIH / "test.csv")
    for name in table["Image"]:
        (images / name).symlink_to(IMAGES / name)
    broken = table["Image"].iloc[7]
    (images / broken).unlink()
    (images / broken).write_bytes((IMAGES / table["Image"].iloc[0]).read_bytes()[:3000])  # truncated PNG
    labels = tmp_path / "labels.csv"
    label_files.to_course_format(table).to_csv(labels, index=False)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pipeline", "train", "--train", labels, "--valid", labels, "--images", images,
               "--out", out, "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--weights", "none"]
    for _ in range(2):  # the second attempt meets the same refusal, not "already holds a training run"
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"1 of the 55 images labels.csv lists cannot be read ({broken}" in error[0]
        assert "use `prepare`, which skips and lists unreadable images" in error[0]
        assert not out.exists() or not any(out.iterdir())
